"""CloudEvents as a topic reads them (structured, binary, plain JSON), writes them for
subscribers, and matches them against subscription filters."""

from __future__ import annotations

import json

import pytest

from stratus.errors import BadRequest
from stratus.triggers.events import check_filter, matches, read_event, to_structured

STRUCTURED = {"content-type": "application/cloudevents+json"}
EVENT = {"specversion": "1.0", "id": "e-1", "source": "/shop", "type": "order.created",
         "subject": "o-7", "region": "eu", "time": "2026-01-02T03:04:05Z",
         "datacontenttype": "application/json", "data": {"order": 7}}


def test_structured_mode_keeps_every_attribute_and_extension() -> None:
    event = read_event(STRUCTURED, json.dumps(EVENT).encode(), "orders")
    written = json.loads(to_structured(event))
    assert written == EVENT


def test_binary_mode_reads_ce_headers_and_the_body_as_data() -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "b-1", "ce-source": "/shop",
               "ce-type": "order.paid", "ce-region": "us", "Content-Type": "application/json"}
    event = read_event(headers, b'{"amount": 3}', "orders")
    written = json.loads(to_structured(event))
    assert written["id"] == "b-1" and written["region"] == "us"
    assert written["data"] == {"amount": 3} and written["datacontenttype"] == "application/json"


def test_an_event_sent_twice_is_the_same_payload_twice() -> None:
    timeless = json.dumps({k: v for k, v in EVENT.items() if k != "time"}).encode()
    first, second = (to_structured(read_event(STRUCTURED, timeless, "t")) for _ in range(2))
    assert first == second and b'"time"' not in first
    headers = {"ce-specversion": "1.0", "ce-id": "b-1", "ce-source": "/s", "ce-type": "t"}
    assert to_structured(read_event(headers, b"", "t")) == to_structured(read_event(headers, b"", "t"))


def test_plain_json_is_wrapped_into_an_event() -> None:
    event = read_event({"content-type": "application/json"}, b"[1, 2]", "orders")
    written = json.loads(to_structured(event))
    assert written["source"] == "/stratus/topics/orders" and written["type"] == "stratus.publish"
    assert written["data"] == [1, 2] and written["specversion"] == "1.0" and written["id"]
    other = read_event({}, b"{}", "orders")
    assert other.get_id() != event.get_id()


@pytest.mark.parametrize(("headers", "body", "says"), [
    (STRUCTURED, b"{not json", "not JSON"),
    (STRUCTURED, b"[1]", "JSON object"),
    (STRUCTURED, json.dumps({k: v for k, v in EVENT.items() if k != "id"}).encode(), "id"),
    (STRUCTURED, json.dumps({**EVENT, "specversion": "0.9"}).encode(), "specversion"),
    (STRUCTURED, json.dumps({**EVENT, "time": "yesterday"}).encode(), "yesterday"),
    (STRUCTURED, json.dumps({**EVENT, "Bad-Ext": "x"}).encode(), "Bad-Ext"),
    (STRUCTURED, json.dumps({**EVENT, "type": ""}).encode(), "type"),
    ({"ce-id": "1", "ce-source": "/s", "ce-type": "t"}, b"", "ce-specversion"),
    ({"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t",
      "content-type": "application/json"}, b"{oops", "not valid JSON"),
    ({"content-type": "application/json"}, b"{oops", "not JSON"),
])
def test_a_malformed_event_is_a_400_naming_the_problem(headers: dict[str, str], body: bytes,
                                                       says: str) -> None:
    with pytest.raises(BadRequest) as raised:
        read_event(headers, body, "orders")
    assert says in raised.value.message


def test_filters_match_attributes_and_extensions_exactly() -> None:
    event = read_event(STRUCTURED, json.dumps(EVENT).encode(), "orders")
    assert matches({}, event)
    assert matches({"type": "order.created", "region": "eu"}, event)
    assert matches({"time": "2026-01-02T03:04:05Z"}, event)
    assert not matches({"type": "order.created", "region": "us"}, event)
    assert not matches({"type": "order"}, event)  # exact, not a prefix
    assert not matches({"missing": "x"}, event)
    with pytest.raises(BadRequest, match="attribute name"):
        check_filter({"Type": "x"})
    with pytest.raises(BadRequest, match="string"):
        check_filter({"type": 3})
