"""Handlers for the contract's edges: Lambda bodies of each type, output no protocol can carry,
and errors raised deep in the bundle's own modules (for their tracebacks)."""

from __future__ import annotations

from typing import Any

from lib.helpers import check_ready, parse_amount


def handler(event: dict[str, Any], context: Any) -> Any:
    kind = event.get("body", "text")
    if kind == "text":
        return {"statusCode": 200, "body": "hello, world"}
    if kind == "json-text":
        return {"statusCode": 200, "body": '{"hello": "world"}'}
    if kind == "dict":
        return {"statusCode": 201, "body": {"hello": "world"}}
    if kind == "typed":
        return {"statusCode": 200, "body": '{"a": 1}', "headers": {"Content-Type": "application/json"}}
    if kind == "set":
        return {"statusCode": 200, "body": {"tags": {"a", "b"}}}
    return {"plain": kind}


class Amounts:
    def __call__(self, request: dict[str, Any]) -> Any:
        if request.get("action") == "object":
            return {"value": object()}
        if request.get("action") == "set":
            return {1, 2, 3}
        return {"cents": parse_amount(str(request.get("amount", "")))}


class NotReady:
    def __init__(self) -> None:
        check_ready()

    def __call__(self, request: Any) -> Any:
        return request
