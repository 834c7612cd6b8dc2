"""Admission at the edge, after authentication: rate limits (per key and per namespace) on every
request, the namespace concurrency cap on data-plane requests, and the bounded, depth-checked
read of control-plane JSON bodies. The policies are in ``security.limits``; this applies them.

With no limit configured, a request costs one attribute test here (and a key lookup when it
used an API key, whose own ``rate_limit_rps`` applies whatever the configuration).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter
from starlette.types import Message, Receive, Scope

from stratus.errors import QuotaFull, RateLimited, StratusError
from stratus.gateway.edge import scope_header
from stratus.gateway.http import header_map, read_body
from stratus.security.jsondepth import check_depth
from stratus.security.keys import KeyRing
from stratus.security.limits import ConcurrencyGate, RateLimiter
from stratus.security.quotas import Quotas
from stratus.security.roles import Principal

CONCURRENCY_RETRY_S = 1.0  # in-flight requests usually finish within it
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def is_json(content_type: bytes | None) -> bool:
    """A body FastAPI would parse as JSON: ``application/json`` or any ``+json`` type."""
    if content_type is None:
        return False
    media = content_type.partition(b";")[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/")
                                            and media.endswith(b"+json"))


class Guard:
    def __init__(self, quotas: Quotas, keys: KeyRing | None = None, *, max_body_bytes: int,
                 max_json_depth: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limiter = RateLimiter(quotas)
        self.gate = ConcurrencyGate(quotas)
        self.keys = keys
        self.rate_limited = quotas.rate_limited
        self.concurrency_limited = quotas.concurrency_limited
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth
        self.clock = clock
        self.refused: Counter | None = None  # set by count_into, once the registry exists

    def count_into(self, registry: CollectorRegistry) -> None:
        self.refused = Counter("stratus_refused_requests",
                               "Requests refused (429) by a rate limit or the concurrency quota",
                               ("namespace", "limit"), registry=registry)

    def _count(self, namespace: str, limit: str) -> None:
        if self.refused is not None:
            self.refused.labels(namespace, limit).inc()

    def key_rate(self, principal: Principal) -> float | None:
        """The API key's own rate limit, which overrides the namespace's ``key_rps``."""
        if principal.key_id is None or self.keys is None:
            return None
        record = self.keys.get(principal.key_id)
        return record.rate_limit_rps if record is not None else None

    def check_rate(self, principal: Principal) -> RateLimited | None:
        override = self.key_rate(principal)
        if override is None and not self.rate_limited:
            return None
        refusal = self.limiter.check(principal, override, self.clock())
        if refusal is None:
            return None
        self._count(principal.namespace, f"{refusal.scope}_rps")
        return RateLimited(refusal.message(), retry_after=refusal.retry_after)

    # -- the data plane ---------------------------------------------------------------
    def enter(self, principal: Principal | StratusError) -> Principal | StratusError:
        """The principal when admitted, and then ``leave`` must follow; else why not (429).
        An authentication error passes through as it is."""
        if isinstance(principal, StratusError):
            return principal
        refused = self.check_rate(principal)
        if refused is not None:
            return refused
        if self.concurrency_limited:
            quota = self.gate.enter(principal.namespace)
            if quota is not None:
                self._count(principal.namespace, "max_concurrency")
                return QuotaFull(
                    f"namespace {principal.namespace!r} already has {quota.max_concurrency} "
                    f"requests in flight (quota max_concurrency)", retry_after=CONCURRENCY_RETRY_S)
        return principal

    def leave(self, admitted: Principal | StratusError) -> None:
        if self.concurrency_limited and not isinstance(admitted, StratusError):
            self.gate.leave(admitted.namespace)

    # -- the control plane ------------------------------------------------------------
    async def admit_control(self, scope: Scope, receive: Receive,
                            principal: Principal) -> Receive | StratusError:
        """Rate limits, then a JSON body read in full (413 over the size limit) and checked
        for depth (400); the app then reads it from the returned ``receive``."""
        refused = self.check_rate(principal)
        if refused is not None:
            return refused
        if scope["method"] not in _BODY_METHODS or not is_json(scope_header(scope, b"content-type")):
            return receive  # uploads stream through; FastAPI reads nothing else as JSON
        try:
            body = await read_body(receive, header_map(scope["headers"]), self.max_body_bytes)
            check_depth(body, self.max_json_depth)
        except StratusError as exc:
            return exc
        return replay(body, receive)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` once, then what the client sends (its disconnect)."""
    pending = True

    async def receive_again() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_again
