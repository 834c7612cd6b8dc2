"""Turns wire payloads into what a handler receives, and its return value back into a payload.

- JSON requests: the handler gets the parsed body and may return anything JSON can
  carry; numpy arrays and torch tensors become nested lists.
- Tensor requests (v2): the handler gets ``{name: ndarray}`` and returns such a dict.
- Lambda-style handlers return ``{"statusCode": ..., "body": ..., "headers": ...}``; a string
  body is text (``text/plain; charset=utf-8``), a dict or list is JSON, bytes are binary.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from stratus.errors import BadRequest, InvalidJSON, UnencodableOutput
from stratus.runtime import wire
from stratus.runtime.tensors import from_wire, to_wire

# The content types of a Lambda-style answer whose handler set none (``encode_lambda``).
JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"
BINARY_TYPE = "application/octet-stream"


def _json_default(value: Any) -> Any:
    if hasattr(value, "detach") and hasattr(value, "tolist"):  # torch tensor
        return value.detach().cpu().tolist()
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dump_json(value: Any) -> bytes:
    try:
        return json.dumps(value, default=_json_default, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise UnencodableOutput(f"handler output cannot be encoded as JSON: {exc}") from exc


def decode_request(kind: int, payload: Any) -> Any:
    if kind == wire.KIND_JSON:
        try:
            return json.loads(payload)
        except ValueError as exc:
            raise InvalidJSON(f"request body is not valid JSON: {exc}") from exc
    if kind == wire.KIND_TENSORS:
        if not isinstance(payload, dict):
            raise BadRequest("tensor payload must be a map of name to tensor")
        return {name: from_wire(name, tensor) for name, tensor in payload.items()}
    raise BadRequest(f"unknown payload kind {kind}")


def encode_tensors(output: Any) -> dict[str, Any]:
    if not isinstance(output, Mapping):
        raise UnencodableOutput(
            f"a v2 handler must return a dict of output name to array, not {type(output).__name__}"
        )
    return {str(name): to_wire(value, str(name)) for name, value in output.items()}


def encode_lambda(output: Any) -> list[Any]:
    """Map a Lambda proxy response onto [status, headers, body]."""
    if not isinstance(output, Mapping) or "statusCode" not in output:
        # Lambda's direct-invoke semantics: a plain value is a 200 with a JSON body.
        return [200, {"content-type": JSON_TYPE}, dump_json(output)]
    status = output["statusCode"]
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise UnencodableOutput(f"statusCode must be an integer HTTP status, not {status!r}")
    raw_headers = output.get("headers") or {}
    if not isinstance(raw_headers, Mapping):
        raise UnencodableOutput("headers must be a map of name to value")
    headers = {str(k).lower(): str(v) for k, v in raw_headers.items()}
    body = output.get("body", "")
    # A content type the handler did not set follows the body's Python type, so that
    # ``application/json`` always labels JSON: a string is text, not a JSON document.
    if isinstance(body, str) and output.get("isBase64Encoded"):
        try:
            data = base64.b64decode(body, validate=True)
        except ValueError as exc:
            raise UnencodableOutput(f"body is not valid base64: {exc}") from exc
        headers.setdefault("content-type", BINARY_TYPE)
    elif isinstance(body, str):
        data = body.encode()
        headers.setdefault("content-type", TEXT_TYPE)
    elif isinstance(body, bytes):
        data = body
        headers.setdefault("content-type", BINARY_TYPE)
    elif body is None:
        data = b""
        headers.setdefault("content-type", TEXT_TYPE)
    else:
        data = dump_json(body)
        headers.setdefault("content-type", JSON_TYPE)
    return [status, headers, data]


def encode_response(request_kind: int, lambda_style: bool, output: Any) -> tuple[int, Any]:
    if request_kind == wire.KIND_TENSORS:
        return wire.KIND_TENSORS, encode_tensors(output)
    if lambda_style:
        return wire.KIND_HTTP, encode_lambda(output)
    return wire.KIND_JSON, dump_json(output)
