"""Topics: publish a CloudEvent, and every subscription whose filter matches it gets an async
invocation of its own (keyed by topic, event id and subscription, so a republished event or a
retried publish never runs a subscriber twice)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from cloudevents.core.base import BaseCloudEvent

from stratus.errors import NotFound
from stratus.store.triggers import Subscription, TriggerStore
from stratus.triggers.events import STRUCTURED, check_filter, matches, read_event, to_structured
from stratus.triggers.names import check_name
from stratus.triggers.submitter import DeploymentCheck, Submitter

log = logging.getLogger("stratus.triggers")


def event_key(topic: str, event_id: str, subscription: str) -> str:
    return f"topic:{topic}:{event_id}:{subscription}"


class Topics:
    def __init__(self, store: TriggerStore, submitter: Submitter, check: DeploymentCheck,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.submitter = submitter
        self.check = check
        self.clock = clock

    async def create(self, namespace: str, name: str) -> dict[str, Any]:
        check_name("topic", name)
        topic = await asyncio.to_thread(self.store.add_topic, namespace, name, self.clock())
        return topic.view()

    async def ls(self, namespace: str) -> list[dict[str, Any]]:
        return [topic.view() for topic in await asyncio.to_thread(self.store.topics, namespace)]

    async def delete(self, namespace: str, name: str) -> None:
        await asyncio.to_thread(self.store.delete_topic, namespace, name)

    async def subscribe(self, namespace: str, topic: str, deployment: str,
                        filter: Mapping[str, Any], name: str | None = None) -> dict[str, Any]:
        name = name or deployment
        check_name("subscription", name)
        wanted = check_filter(filter)
        await asyncio.to_thread(self.store.subscriptions, namespace, topic)  # 404 first
        self.check(namespace, deployment)
        made = await asyncio.to_thread(self.store.add_subscription, namespace, topic, name,
                                       deployment, wanted, self.clock())
        return made.view()

    async def subscriptions(self, namespace: str, topic: str) -> list[dict[str, Any]]:
        found = await asyncio.to_thread(self.store.subscriptions, namespace, topic)
        return [subscription.view() for subscription in found]

    async def unsubscribe(self, namespace: str, topic: str, name: str) -> None:
        await asyncio.to_thread(self.store.delete_subscription, namespace, topic, name)

    async def publish_http(self, namespace: str, topic: str, headers: Mapping[str, str],
                           body: bytes) -> dict[str, Any]:
        """A publish request: the event in structured or binary mode, or plain JSON."""
        subscriptions = await asyncio.to_thread(self.store.subscriptions, namespace, topic)
        return await self._fan_out(namespace, topic, read_event(headers, body, topic),
                                   subscriptions)

    async def publish(self, namespace: str, topic: str, event_json: bytes) -> dict[str, Any]:
        """In-process publish (an async invocation's "topic" destination): a structured
        CloudEvent if the JSON is one (it has a specversion), else plain JSON to wrap."""
        try:
            document = json.loads(event_json)
        except ValueError:
            document = None
        structured = isinstance(document, dict) and "specversion" in document
        headers = {"content-type": STRUCTURED if structured else "application/json"}
        return await self.publish_http(namespace, topic, headers, event_json)

    async def _fan_out(self, namespace: str, topic: str, event: BaseCloudEvent,
                       subscriptions: list[Subscription]) -> dict[str, Any]:
        payload = to_structured(event)
        event_id = event.get_id()
        matching = [s for s in subscriptions if matches(s.filter, event)]
        # Submitted together: the queue commits them in one group rather than one by one.
        outcomes = await asyncio.gather(
            *(self.submitter.submit(
                namespace, subscription.deployment, payload,
                source={"kind": "topic", "topic": topic, "subscription": subscription.name,
                        "event": event_id},
                idempotency_key=event_key(topic, event_id, subscription.name))
              for subscription in matching),
            return_exceptions=True)
        invocations: list[dict[str, Any]] = []
        skipped: list[dict[str, str]] = []
        for subscription, outcome in zip(matching, outcomes, strict=True):
            if isinstance(outcome, NotFound):  # its deployment was deleted: the rest still run
                log.warning("topic %s/%s: subscription %s skipped: %s", namespace, topic,
                            subscription.name, outcome)
                skipped.append({"subscription": subscription.name, "reason": str(outcome)})
            elif isinstance(outcome, BaseException):
                # The publisher gets the error and publishes again: the subscriptions already
                # submitted find their invocations by key, the others get theirs.
                raise outcome
            else:
                invocations.append({"subscription": subscription.name,
                                    "deployment": subscription.deployment,
                                    "id": outcome[0].id})
        answer: dict[str, Any] = {"id": event_id, "invocations": invocations}
        if skipped:
            answer["skipped"] = skipped
        return answer
