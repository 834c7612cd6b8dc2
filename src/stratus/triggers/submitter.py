"""What the triggers need of the async layer: submit an invocation, and wait for it to end.
``stratus.invocations.service.AsyncService`` is one; the server hands it in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from stratus.queue.records import AsyncInvocation

# Raises NotFound for a deployment the namespace does not have (the controller's get_unit).
DeploymentCheck = Callable[[str, str], object]


class Submitter(Protocol):
    async def submit(self, namespace: str, deployment: str, payload: bytes, *,
                     priority: int = 0, source: dict[str, Any] | None = None,
                     idempotency_key: str | None = None,
                     delay_s: float = 0.0) -> tuple[AsyncInvocation, bool]:
        """Store a new async invocation (or, for a used idempotency key, find the first)."""
        ...

    async def wait(self, namespace: str, invocation_id: str,
                   timeout_s: float) -> AsyncInvocation:
        """The invocation once terminal, or as it stands after ``timeout_s``."""
        ...
