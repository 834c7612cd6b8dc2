"""The traffic commands' own parsing and rendering: durations, REV=WEIGHT, the PUT body, and
the tables drawn from a traffic view."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from rich.console import Console

from stratus.cli import traffic
from stratus.cli.judging import parse_duration
from stratus.cli.traffic import parse_assignments, traffic_update


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90.0), ("90s", 90.0), ("2m", 120.0), ("1h", 3600.0), ("1h30m", 5400.0),
    ("500ms", 0.5), ("1500ms", 1.5), ("2.5ms", 0.0025), (" 45s ", 45.0),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "5x", "1.5s", "-5", "0", "0s", "0ms", "ms", "5 m"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_assignments_become_the_traffic_map() -> None:
    assert parse_assignments(["1=90", "2=10"]) == {"1": 90, "2": 10}
    assert parse_assignments(["3=100%", "1=0"]) == {"3": 100, "1": 0}
    assert parse_assignments([]) == {}


@pytest.mark.parametrize(("pairs", "message"), [
    (["1=abc"], "'1=abc' is not REV=WEIGHT"),
    (["one=100"], "is not REV=WEIGHT"),
    (["1:100"], "is not REV=WEIGHT"),
    (["1=-5", "2=105"], "is not REV=WEIGHT"),
    (["0=100"], "revisions start at 1"),
    (["1=150"], "weights are 0..100"),
    (["1=50", "1=50"], "revision 1 is given twice"),
    (["1=60", "2=30"], "the weights sum to 90, not 100"),
])
def test_bad_assignments_are_usage_errors(pairs: list[str], message: str) -> None:
    with pytest.raises(typer.BadParameter, match=message):
        parse_assignments(pairs)


def test_the_update_holds_only_what_was_given() -> None:
    def body(*pairs: str, **flags: Any) -> dict[str, Any]:
        options = {"shadow": None, "no_shadow": False, "sticky_header": None,
                   "sticky_field": None, "no_sticky": False, **flags}
        return traffic_update(list(pairs), **options)

    assert body() == {}
    assert body("1=50", "2=50") == {"traffic": {"1": 50, "2": 50}}
    assert body(shadow=2) == {"shadow": 2}
    assert body(no_shadow=True) == {"shadow": None}
    assert body(sticky_header="x-user") == {"sticky": {"header": "x-user"}}
    assert body(sticky_field="user") == {"sticky": {"field": "user"}}
    assert body("2=100", no_sticky=True) == {"traffic": {"2": 100}, "sticky": None}
    with pytest.raises(typer.BadParameter, match="not both"):
        body(shadow=2, no_shadow=True)
    with pytest.raises(typer.BadParameter, match="one of"):
        body(sticky_header="x-user", sticky_field="user")
    with pytest.raises(typer.BadParameter, match="one of"):
        body(sticky_field="user", no_sticky=True)


VIEW: dict[str, Any] = {
    "deployment": "shop", "stable": 1, "latest": 3,
    "traffic": {"1": 90, "2": 10}, "shadow": 3, "sticky": {"header": "x-user", "field": None},
    "rollout": {"from": 1, "to": 2, "plan": [10, 25, 50, 75, 100], "stage": 0, "weight": 10,
                "interval_s": 60.0, "window_s": 60.0, "state": "running", "reason": None,
                "started_at": "2026-11-01T10:00:00+00:00", "updated_at": 1_793_527_200.0},
    "revisions": {"1": {"requests": 900, "errors": 2, "p50_ms": 3.25, "p95_ms": 9.5,
                        "shadow": False},
                  "2": {"requests": 100, "errors": 0, "p50_ms": None, "p95_ms": None,
                        "shadow": False}},
    "events": [{"at": "2026-11-01T10:00:00+00:00", "kind": "rollout_started",
                "message": f"event {i}"} for i in range(8)],
}


def test_a_traffic_view_renders(monkeypatch: pytest.MonkeyPatch) -> None:
    console = Console(width=200, record=True)
    monkeypatch.setattr(traffic, "out", console)
    traffic.print_traffic(VIEW)
    text = console.export_text()
    assert "shop  stable 1, latest 3; sticky by header x-user" in text
    cells = [line.replace("│", " ").split() for line in text.splitlines()]
    rows = {row[0]: row for row in cells if row and row[0] in ("1", "2", "3")}
    assert rows["1"] == ["1", "90%", "900", "2", "3.2", "9.5"]
    assert rows["2"] == ["2", "10%", "100", "0", "-", "-"]
    assert rows["3"] == ["3", "shadow", "0", "0", "-", "-"]
    assert "rollout 1 → 2 (canary 10% → 25% → 50% → 75% → 100%): running, stage 1/5" in text
    assert "event 2" not in text and "event 3" in text and "event 7" in text


def test_revisions_render() -> None:
    console = Console(width=200, record=True)
    console.print(traffic.revisions_table([
        {"revision": 1, "status": "ready", "reason": None, "weight": 0, "routed": False,
         "shadow": True, "created_at": "2026-11-01T10:00:00+00:00",
         "spec": {"entrypoint": "app.py:Echo", "bundle": "ab" * 32}},
        {"revision": 2, "status": "failed", "reason": "error ratio 30%", "weight": 0,
         "routed": False, "shadow": False, "created_at": "2026-11-01T10:05:00+00:00",
         "spec": {"entrypoint": "app.py:Echo", "bundle": "cd" * 32}},
        {"revision": 3, "status": "ready", "reason": None, "weight": 0, "routed": True,
         "shadow": False, "created_at": "2026-11-01T10:05:00+00:00",
         "spec": {"entrypoint": "stratus.llm.server:LLM", "bundle": ""}},
        {"revision": 4, "status": "ready", "reason": None, "weight": 100, "routed": True,
         "shadow": False, "created_at": "2026-11-01T10:06:00+00:00",
         "spec": {"entrypoint": "app.py:Echo", "bundle": "ef" * 32}},
    ]))
    cells = [line.replace("│", " ").split() for line in console.export_text().splitlines()]
    rows = {row[0]: row for row in cells if row and row[0].isdigit()}
    # CREATED is in local time, so only the other cells are compared.
    assert rows["1"][:3] == ["1", "ready", "shadow"]
    assert rows["1"][-2:] == ["app.py:Echo", "@abababababab"]
    assert rows["2"][:3] == ["2", "failed", "-"]
    assert rows["2"][-4:] == ["@cdcdcdcdcdcd", "error", "ratio", "30%"]
    assert rows["3"][:3] == ["3", "ready", "0%"] and rows["3"][-1] == "stratus.llm.server:LLM"
    assert rows["4"][:3] == ["4", "ready", "100%"]


def test_times_read_as_utc_whatever_their_form() -> None:
    """The store on SQLite gives naive timestamps, rollouts give epoch seconds: all are UTC."""
    epoch = 1_793_527_200.0  # 2026-11-01T10:00:00Z
    shown = {traffic._when(value) for value in
             ("2026-11-01T10:00:00", "2026-11-01T10:00:00+00:00", "2026-11-01T11:00:00+01:00",
              epoch)}
    assert len(shown) == 1
    assert traffic._when(None) == "-" and traffic._when("soon") == "soon"
