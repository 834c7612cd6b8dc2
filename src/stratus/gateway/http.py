"""HTTP building blocks every adapter shares: a parsed call, a reply and how it is sent, the
revision headers, bounded body reads and the contract's error shape. Adapters take a ``Call``
and return a ``Reply``; they never see ASGI, so the data plane can serve them without a
framework in the way.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import Receive, Send

from stratus.errors import (
    BadRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    StratusError,
    retry_after_seconds,
)
from stratus.resilience.priority import PRIORITY_HEADER, Priority, request_priority
from stratus.security.roles import Principal

log = logging.getLogger("stratus.gateway")

DEBUG_HEADER = "x-stratus-debug"
REVISION_HEADER = "x-stratus-revision"  # asks for a revision; on an answer, says which served
COLD_START_HEADER = "x-stratus-cold-start"
ATTEMPTS_HEADER = "x-stratus-attempts"  # how many times the request was sent to a replica
TIMEOUT_HEADER = "x-stratus-timeout"  # the caller's deadline: seconds from the request's arrival
MAX_TIMEOUT_S = 86_400.0
_REVISION_KEY, _COLD_START_KEY = REVISION_HEADER.encode(), COLD_START_HEADER.encode()
_ATTEMPTS_KEY = ATTEMPTS_HEADER.encode()
JSON_TYPE = b"application/json"


@dataclass(slots=True)
class Call:
    """One request as an adapter sees it."""

    principal: Principal
    request_id: str
    params: tuple[str, ...]  # path parameters, in route order
    headers: dict[str, str]
    query: str
    body: bytes

    def pinned_revision(self) -> int | None:
        """The revision an ``x-stratus-revision`` header pins the request to, if any."""
        return pinned_revision(self.headers.get(REVISION_HEADER))

    def priority(self) -> Priority:
        """How late load shedding refuses it: the ``X-Stratus-Priority`` header, within what
        the caller's key allows (``request_priority``)."""
        principal = self.principal
        return request_priority(self.headers.get(PRIORITY_HEADER), principal.priority,
                                principal.max_priority)

    def deadline(self) -> float | None:
        """The ``time.monotonic()`` by which the caller wants its answer: ``X-Stratus-Timeout``
        seconds from now (the request's arrival), or None without the header."""
        return request_deadline(self.headers.get(TIMEOUT_HEADER))

    def query_param(self, name: str, default: str) -> str:
        for key, value in parse_qsl(self.query):
            if key == name:
                return value
        return default


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    content_type: bytes = JSON_TYPE


def request_deadline(header: str | None) -> float | None:
    """A deadline from an ``X-Stratus-Timeout`` value: a positive number of seconds. Like
    gRPC's ``grpc-timeout``, it bounds the whole request (its wait in the queue and every
    retry), where a deployment's ``timeout_s`` bounds each attempt."""
    if header is None or not header.strip():
        return None
    try:
        seconds = float(header)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_TIMEOUT_S:  # NaN fails both
        raise BadRequest(f"{TIMEOUT_HEADER} must be a number of seconds above 0 and at most "
                         f"{MAX_TIMEOUT_S:g}, not {header!r}")
    return time.monotonic() + seconds


def pinned_revision(header: str | None) -> int | None:
    """The revision number an ``x-stratus-revision`` request header holds; None if it is absent
    or blank. The traffic split is skipped for a pinned request."""
    if header is None or not header.strip():
        return None
    text = header.strip()
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise BadRequest(f"{REVISION_HEADER} must be a revision number, not {header!r}")
    return int(text)


def revision_header(revision: int) -> tuple[bytes, bytes]:
    """Which revision answered: on every answer a replica gave, errors included."""
    return (_REVISION_KEY, str(revision).encode())


def stratus_headers(revision: int, cold_start: bool,
                    attempts: int = 1) -> list[tuple[bytes, bytes]]:
    """The contract's headers on a served answer: the revision, whether it paid a cold
    start, and how many attempts it took (more than one after a retry of lost work). Every
    adapter and every stream sends these."""
    return [revision_header(revision),
            (_COLD_START_KEY, b"true" if cold_start else b"false"),
            attempts_header(attempts)]


def attempts_header(attempts: int) -> tuple[bytes, bytes]:
    return (_ATTEMPTS_KEY, str(attempts).encode())


async def send_reply(send: Send, reply: Reply, request_id: bytes) -> None:
    """Send a whole reply: the data plane's and the control API's edge alike."""
    headers = [
        (b"content-type", reply.content_type),
        (b"content-length", str(len(reply.body)).encode()),
        (b"x-request-id", request_id),
        *reply.headers,
    ]
    if reply.status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="stratus"'))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


def header_map(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {key.decode("latin-1"): value.decode("latin-1") for key, value in raw}


async def read_body(receive: Receive, headers: dict[str, str], limit: int) -> bytes:
    """Read the whole body, refusing (413) anything over ``limit`` bytes before buffering it."""
    declared = headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit}")
    message = await receive()
    if message["type"] == "http.disconnect":
        raise _gone()
    body = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        return bytes(body)
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":  # gone, or timed out (gateway/protocol.py)
            raise _gone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _gone() -> BadRequest:
    """Nobody will read the answer; the error only keeps a partial body from being served."""
    return BadRequest("the client went away before sending the whole body")


def error_body(error_type: str, message: str, request_id: str, **extra: Any) -> bytes:
    """The contract's error shape, used on every route outside ``/v2``."""
    return json.dumps(
        {"error": {"type": error_type, "message": message, "request_id": request_id, **extra}}
    ).encode()


def v2_error_body(error_type: str, message: str, request_id: str, **extra: Any) -> bytes:
    """The Open Inference Protocol's shape, ``{"error": "<message>"}``, which Triton clients
    parse; the type and request id ride along as extra fields."""
    return json.dumps(
        {"error": message, "error_type": error_type, "request_id": request_id, **extra}
    ).encode()


# OpenAI's error categories by HTTP status; our specific type travels as ``code``.
_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                 403: "permission_error", 404: "invalid_request_error", 405: "invalid_request_error",
                 413: "invalid_request_error", 429: "rate_limit_error"}


def openai_error_body(error: StratusError, request_id: str, **extra: Any) -> bytes:
    """OpenAI's shape on ``/v1``: ``{"error": {"message", "type", "param", "code"}}``, which
    its clients parse; the request id rides along."""
    return json.dumps({"error": {
        "message": error.message,
        "type": _OPENAI_TYPES.get(error.status, "server_error"),
        "param": getattr(error, "param", None),
        "code": error.type,
        "request_id": request_id,
        **extra,
    }}).encode()


def error_shape(path: str) -> str:
    """Which error shape a route's clients parse: ``openai`` on ``/v1``, ``v2`` (the Open
    Inference Protocol's) on ``/v2``, ``contract`` everywhere else."""
    if path.startswith("/v1/"):
        return "openai"
    return "v2" if path.startswith("/v2/") else "contract"


def render_error(error: StratusError, request_id: str, path: str, **extra: Any) -> bytes:
    """The error in the shape its route's clients parse (``error_shape``)."""
    shape = error_shape(path)
    if shape == "openai":
        return openai_error_body(error, request_id, **extra)
    body = v2_error_body if shape == "v2" else error_body
    return body(error.type, error.message, request_id, **extra)


def error_reply(
    error: StratusError,
    request_id: str,
    principal: Principal | None,
    headers: dict[str, str],
    path: str = "",
) -> Reply:
    extra: dict[str, Any] = {}
    if error.detail and principal is not None and principal.is_admin \
            and headers.get(DEBUG_HEADER) == "true":
        extra["detail"] = error.detail  # stack traces go to admins who ask, and to the log
    if error.status >= 500 and error.detail:
        log.warning("%s (request %s): %s\n%s", error.type, request_id, error.message, error.detail)
    reply_headers: list[tuple[bytes, bytes]] = []
    if error.retry_after is not None:
        reply_headers.append((b"retry-after", str(retry_after_seconds(error.retry_after)).encode()))
    if error.revision is not None:
        reply_headers.append(revision_header(error.revision))
    if error.attempts is not None:
        reply_headers.append(attempts_header(error.attempts))
    if isinstance(error, MethodNotAllowed):
        reply_headers.append((b"allow", ", ".join(error.allow).encode()))
    return Reply(error.status, render_error(error, request_id, path, **extra), reply_headers)
