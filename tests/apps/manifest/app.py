"""Deployed through stratus.yaml in the CLI tests."""

from typing import Any


class Greeter:
    def __init__(self, ctx: Any) -> None:
        self.greeting = ctx.config.get("greeting", "hello")

    def __call__(self, request: dict[str, Any]) -> dict[str, str]:
        return {"message": f"{self.greeting}, {request.get('name', 'world')}"}
