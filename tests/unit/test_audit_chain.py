"""The audit hash chain: any sequence of events chains into records that verify, and any edit,
deletion or reordering is reported at the record where the chain breaks."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stratus.security.audit import (
    GENESIS,
    LIMITS,
    AuditEvent,
    AuditRecord,
    Result,
    canonical,
    chain,
    result_of,
    verify,
)

texts = st.text(max_size=30)
events = st.builds(
    AuditEvent,
    at=st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False),
    namespace=texts, actor=texts, action=texts, target=texts, source=texts,
    result=st.sampled_from(list(Result)), status=st.integers(0, 599), request_id=texts)
logs = st.lists(events, min_size=1, max_size=12).map(lambda found: chain(None, found))


def _event(action: str = "deployments.create", **changes: object) -> AuditEvent:
    base = AuditEvent(1_700_000_000.25, "default", "bootstrap", action, "web", "127.0.0.1",
                      "ok", 200, "req-1")
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@given(logs)
def test_a_chained_log_verifies(records: list[AuditRecord]) -> None:
    verdict = verify(records)
    assert verdict.ok and verdict.first_bad is None and verdict.reason is None
    assert verdict.records == len(records)
    assert (verdict.head_id, verdict.head_hash) == (records[-1].id, records[-1].hash)
    assert [r.id for r in records] == list(range(1, len(records) + 1))
    assert records[0].prev_hash == GENESIS


@given(logs, st.data())
def test_editing_any_field_of_any_record_is_reported_at_that_record(
        records: list[AuditRecord], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(records) - 1))
    name = data.draw(st.sampled_from([f.name for f in dataclasses.fields(AuditEvent)]))
    original = records[index]
    value = getattr(original.event, name)
    changed = value + 1 if isinstance(value, int | float) else value + "x"
    edited = dataclasses.replace(original.event, **{name: changed})
    records[index] = dataclasses.replace(original, event=edited)
    verdict = verify(records)
    assert not verdict.ok and verdict.first_bad == original.id
    assert "altered" in (verdict.reason or "")


@given(logs, st.data())
def test_rehashing_an_edited_record_breaks_the_link_to_the_next(
        records: list[AuditRecord], data: st.DataObject) -> None:
    """Whoever edits a record and recomputes its hash still leaves the next record pointing at
    the old one."""
    if len(records) < 2:
        return
    index = data.draw(st.integers(0, len(records) - 2))
    original = records[index]
    (forged,) = chain(records[index - 1] if index else None,
                      [dataclasses.replace(original.event, actor="someone-else")])
    records[index] = forged
    verdict = verify(records)
    assert verdict.first_bad == records[index + 1].id
    assert "does not follow" in (verdict.reason or "")


@given(logs, st.data())
def test_deleting_a_record_is_reported_at_the_one_after_it(
        records: list[AuditRecord], data: st.DataObject) -> None:
    if len(records) < 2:
        return
    index = data.draw(st.integers(0, len(records) - 2))
    gone = records.pop(index)
    verdict = verify(records)
    assert not verdict.ok and verdict.first_bad == gone.id + 1
    assert verdict.reason == f"record {gone.id} is missing before record {gone.id + 1}"
    assert verdict.records == len(records)  # the rest is still counted


def test_a_run_of_deleted_records_is_named_as_a_range() -> None:
    records = chain(None, [_event(target=str(n)) for n in range(6)])
    del records[1:4]
    verdict = verify(records)
    assert verdict.first_bad == 5 and verdict.reason == "records 2 to 4 are missing before record 5"


def test_deleting_the_first_record_is_reported() -> None:
    records = chain(None, [_event(), _event()])[1:]
    assert verify(records).first_bad == 2


def test_swapping_two_records_is_reported() -> None:
    records = chain(None, [_event(target="a"), _event(target="b"), _event(target="c")])
    records[1], records[2] = records[2], records[1]
    assert verify(records).first_bad == 3


def test_an_empty_log_is_intact_and_has_no_head() -> None:
    verdict = verify([])
    assert verdict.ok and verdict.records == 0 and verdict.head_id is None


def test_a_chain_continues_from_its_tail() -> None:
    first = chain(None, [_event(), _event()])
    rest = chain(first[-1], [_event("deployments.delete")])
    assert rest[0].id == 3 and rest[0].prev_hash == first[-1].hash
    assert verify([*first, *rest]).ok


def test_the_canonical_form_is_stable_and_covers_the_position() -> None:
    event = _event()
    assert canonical(1, event, GENESIS) == canonical(1, event, GENESIS)
    assert canonical(1, event, GENESIS) != canonical(2, event, GENESIS)
    assert b'"action":"deployments.create"' in canonical(1, event, GENESIS)
    assert b" " not in canonical(1, event, GENESIS).replace(b"bootstrap", b"")


def test_values_are_stored_as_they_were_hashed() -> None:
    """Over-long texts are cut and NUL replaced before hashing; an int time becomes a float, as
    the database column will give it back."""
    (record,) = chain(None, [_event(target="t" * 1000 + "\x00", at=5, source="\x00")])
    assert len(record.event.target) == LIMITS["target"] and record.event.at == 5.0
    assert isinstance(record.event.at, float) and record.event.source == "\ufffd"
    assert verify([record]).ok


@pytest.mark.parametrize(("status", "result"), [
    (200, Result.OK), (204, Result.OK), (307, Result.OK), (401, Result.DENIED),
    (403, Result.DENIED), (400, Result.ERROR), (404, Result.ERROR), (500, Result.ERROR),
    (0, Result.ERROR)])
def test_result_of_a_status(status: int, result: Result) -> None:
    assert result_of(status) is result
