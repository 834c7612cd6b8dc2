"""Where a finished asynchronous invocation's outcome goes: a webhook (signed, retried), another
deployment (as a new async invocation) or a topic, as the deployment's settings say."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from stratus.queue.records import AsyncInvocation, Status
from stratus.spec import AsyncSpec, Destination
from stratus.store.secrets import SecretStore

log = logging.getLogger("stratus.invocations")

WEBHOOK_ATTEMPTS = 5
WEBHOOK_TIMEOUT_S = 10.0
SIGNATURE_HEADER = "x-stratus-signature"

# (namespace, deployment, payload, source, priority) -> submitted; (namespace, topic, event)
# -> published
Submit = Callable[[str, str, bytes, dict[str, Any], int], Awaitable[Any]]
Publish = Callable[[str, str, bytes], Awaitable[Any]]


def sign(key: bytes, timestamp: int, body: bytes) -> str:
    """``t=<unix time>,v1=<hex HMAC-SHA256 of "<t>." + body>``: the receiver recomputes it
    with the shared secret, and rejects old timestamps to stop replays."""
    mac = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def outcome_body(record: AsyncInvocation) -> bytes:
    event = "invocation." + record.status.value
    return json.dumps({"event": event, **record.view()}).encode()


class Destinations:
    def __init__(self, secrets: SecretStore | None) -> None:
        self.secrets = secrets
        self.submit: Submit | None = None  # set by the service that owns the queue
        self.publish: Publish | None = None  # set when topics run in this server
        self._client = httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_S, follow_redirects=False)
        self._deliveries: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        for task in list(self._deliveries):
            task.cancel()
        await asyncio.gather(*self._deliveries, return_exceptions=True)
        await self._client.aclose()

    async def deliver(self, record: AsyncInvocation, spec: AsyncSpec | None) -> None:
        """Send ``record``'s outcome on; never raises: a destination that fails is logged, and
        the invocation's own status stands."""
        if spec is None or record.status is Status.CANCELLED:
            return
        target = spec.on_success if record.status is Status.SUCCEEDED else spec.on_failure
        if target is None:
            return
        try:
            await self._send(record, target)
        except Exception:
            log.exception("the destination of invocation %s failed", record.id)

    async def _send(self, record: AsyncInvocation, target: Destination) -> None:
        body = outcome_body(record)
        source = {"kind": "destination", "invocation": record.id, "deployment": record.deployment}
        if target.deployment is not None and self.submit is not None:
            # At the source's priority: a chain keeps within its first submitter's ceiling.
            await self.submit(record.namespace, target.deployment, body, source, record.priority)
        elif target.topic is not None and self.publish is not None:
            await self.publish(record.namespace, target.topic, body)
        elif target.url is not None:
            key = await self._key(record.namespace, target)
            task = asyncio.create_task(self._webhook(target.url, key, body, record.id))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)
        else:
            log.warning("invocation %s: destination %s is not served here", record.id,
                        target.model_dump(exclude_none=True))

    async def _key(self, namespace: str, target: Destination) -> bytes:
        if self.secrets is None or target.secret is None:
            raise LookupError("a webhook needs a signing secret")
        values = await asyncio.to_thread(self.secrets.reveal, namespace, {"KEY": target.secret})
        return values["KEY"].encode()

    async def _webhook(self, url: str, key: bytes, body: bytes, invocation_id: str) -> None:
        """POST the outcome, retrying a connection failure or a 5xx/429 with backoff."""
        for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
            headers = {"content-type": "application/json",
                       SIGNATURE_HEADER: sign(key, int(time.time()), body),
                       "x-stratus-invocation-id": invocation_id,
                       "x-stratus-delivery-attempt": str(attempt)}
            try:
                response = await self._client.post(url, content=body, headers=headers)
                if response.status_code < 500 and response.status_code != 429:
                    if response.status_code >= 400:
                        log.warning("webhook %s refused invocation %s: HTTP %d", url,
                                    invocation_id, response.status_code)
                    return
                reason = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                reason = str(exc) or type(exc).__name__
            log.info("webhook %s for %s failed (attempt %d: %s)", url, invocation_id, attempt,
                     reason)
            await asyncio.sleep(min(30.0, 0.5 * 2 ** (attempt - 1)))
        log.warning("webhook %s for invocation %s given up after %d attempts", url,
                    invocation_id, WEBHOOK_ATTEMPTS)
