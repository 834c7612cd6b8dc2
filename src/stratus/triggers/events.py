"""CloudEvents 1.0 as a topic takes them: read from an HTTP request in structured mode, binary
mode or as plain JSON (wrapped into an event), written in structured JSON for subscribers, and
matched against a subscription's filter. Pure; the ``cloudevents`` package does the format."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast
from urllib.parse import unquote

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.http import HTTPMessage, from_binary, from_structured
from cloudevents.core.exceptions import BaseCloudEventException, CloudEventValidationError
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from stratus.errors import BadRequest

STRUCTURED = "application/cloudevents+json"
PLAIN_TYPE = "stratus.publish"  # the type of an event made from a plain JSON body
REQUIRED = ("specversion", "id", "source", "type")
ATTRIBUTE_NAME = re.compile(r"^[a-z0-9]{1,20}$")  # CloudEvents 1.0 attribute naming
_FORMAT = JSONFormat()
_JSON_TYPE = re.compile(r"^(application|text)/([a-zA-Z0-9\-.]+\+)?json$")


def topic_source(topic: str) -> str:
    return f"/stratus/topics/{topic}"


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _malformed(problem: object) -> BadRequest:
    return BadRequest(f"malformed CloudEvent: {problem}")


def _validation(exc: CloudEventValidationError) -> BadRequest:
    problems = "; ".join(f"{attribute}: {', '.join(str(e) for e in errors)}"
                         for attribute, errors in exc.errors.items())
    return _malformed(problems)


def _check_time(value: object) -> None:
    # The library's own message ("Expected 4 digits") does not say which attribute is wrong.
    try:
        if not isinstance(value, str):
            raise ValueError("not a string")
        datetime.fromisoformat(unquote(value))
    except (ValueError, OverflowError) as exc:
        raise _malformed(f"attribute 'time' is not an RFC 3339 timestamp: {value!r} "
                         f"({exc})") from None


def _as_sent(event: BaseCloudEvent, had_time: bool) -> BaseCloudEvent:
    """The event without the ``time`` the library stamps on one sent without: the same event
    sent twice must be the same payload, or its idempotency key would refuse the second."""
    if not had_time:
        event.get_attributes().pop("time", None)
    return event


def _structured(body: bytes) -> BaseCloudEvent:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _malformed(f"the body is not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise _malformed("a structured event is a JSON object")
    missing = [name for name in REQUIRED if name not in document]
    if missing:  # the library would make up an id and a specversion: not for a received event
        raise _malformed(f"missing required attribute(s): {', '.join(missing)}")
    if "data" in document and "data_base64" in document:
        raise _malformed("an event holds data or data_base64, not both")
    if "time" in document:
        _check_time(document["time"])
    event = from_structured(HTTPMessage({"content-type": STRUCTURED}, body), _FORMAT)
    return _as_sent(event, "time" in document)


def _binary(headers: Mapping[str, str], body: bytes) -> BaseCloudEvent:
    kept = {name.lower(): value for name, value in headers.items()
            if name.lower().startswith("ce-") or name.lower() == "content-type"}
    missing = [f"ce-{name}" for name in REQUIRED if f"ce-{name}" not in kept]
    if missing:
        raise _malformed(f"binary mode needs the header(s) {', '.join(missing)}")
    if "ce-time" in kept:
        _check_time(kept["ce-time"])
    content_type = kept.get("content-type")
    if body and content_type and _JSON_TYPE.match(_media_type(content_type)):
        try:
            json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise _malformed(f"the body is not valid JSON, though its content type is "
                             f"{content_type}") from None
    return _as_sent(from_binary(HTTPMessage(kept, body), _FORMAT), "ce-time" in kept)


def _plain(body: bytes, topic: str) -> BaseCloudEvent:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not JSON ({exc}); send JSON, or a CloudEvent in "
                         f"structured ({STRUCTURED}) or binary (ce-* headers) mode") from None
    attributes = {"type": PLAIN_TYPE, "source": topic_source(topic),
                  "datacontenttype": "application/json"}
    return CloudEvent(attributes, cast(Any, data))  # any JSON value, not only an object


def read_event(headers: Mapping[str, str], body: bytes, topic: str) -> BaseCloudEvent:
    """The event a publish request carries; BadRequest (400) naming what is wrong with it."""
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        if _media_type(lowered.get("content-type", "")) == STRUCTURED:
            return _structured(body)
        if any(name.startswith("ce-") for name in lowered):
            return _binary(lowered, body)
        return _plain(body, topic)
    except CloudEventValidationError as exc:
        raise _validation(exc) from None
    except (BaseCloudEventException, ValueError, TypeError, AttributeError) as exc:
        raise _malformed(exc) from None


def to_structured(event: BaseCloudEvent) -> bytes:
    """The event in structured JSON: what a subscriber's invocation receives."""
    return _FORMAT.write(event)


def attribute_text(event: BaseCloudEvent, name: str) -> str | None:
    """An attribute (or extension) as the string a filter compares with; None if absent."""
    value = event.get_attributes().get(name)
    if value is None:
        return None
    if isinstance(value, datetime):
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    return str(value)


def check_filter(filter: Mapping[str, Any]) -> dict[str, str]:
    """A subscription's filter: attribute names as CloudEvents spells them, string values."""
    for name, value in filter.items():
        if not ATTRIBUTE_NAME.match(name):
            raise BadRequest(f"filter attribute {name!r} is not a CloudEvents attribute name "
                             "(1 to 20 lowercase letters or digits)")
        if not isinstance(value, str):
            raise BadRequest(f"filter attribute {name!r}: the value to match is a string")
    return dict(filter)


def matches(filter: Mapping[str, str], event: BaseCloudEvent) -> bool:
    """Every attribute of the filter present with exactly that value (as Knative's Trigger
    filter); an empty filter takes every event."""
    return all(attribute_text(event, name) == value for name, value in filter.items())
