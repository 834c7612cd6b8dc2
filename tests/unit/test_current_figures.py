"""docs/benchmarks.md's "Current figures" table and its twin, bench/current_figures.json, hold
the same rows: every row of one is in the other, with the same numbers, and each ratio is the
one its two values give."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


@pytest.fixture(scope="module")
def figures_module() -> Iterator[ModuleType]:
    # bench/ only while importing: its grpc.py must not shadow the grpcio package for others.
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("current_figures")
    finally:
        sys.path.remove(str(BENCH))


def section_rows(text: str, begin: str, end: str) -> list[list[str]]:
    """The cells of the generated table's rows, header and rule left out."""
    part = text[text.index(begin):text.index(end)]
    lines = [line for line in part.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip().strip("|").split(" | ")] for line in lines[1:]]


def first_number(cell: str) -> float:
    found = re.search(r"-?\d[\d,]*(?:\.\d+)?", cell)
    assert found, f"no number in {cell!r}"
    return float(found.group().replace(",", ""))


def test_the_table_sits_in_the_current_figures_section_right_after_the_machine(
        figures_module: ModuleType) -> None:
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[:2] == ["## Machine", "## Current figures"]
    section = text[text.index("## Current figures"):text.index(headings[2])]
    assert figures_module.BEGIN in section and figures_module.END in section


def test_every_row_of_the_table_is_in_the_json_and_every_row_of_the_json_in_the_table(
        figures_module: ModuleType) -> None:
    figures = figures_module.load()
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    table = section_rows(text, figures_module.BEGIN, figures_module.END)
    assert all(len(cells) == len(figures_module.HEADERS) for cells in table)
    rendered = [figures_module.cells(figures, row) for row in figures.rows]
    missing_from_doc = [r[0] for r in rendered if r not in table]
    missing_from_json = [cells[0] for cells in table if cells not in rendered]
    assert (missing_from_doc, missing_from_json) == ([], [])
    assert len(table) == len(figures.rows)
    # The numbers, read back from the document's cells rather than through the renderer.
    for cells, row in zip(table, figures.rows, strict=True):
        assert first_number(cells[1]) == row.value, row.id
        if row.peer is None:
            assert cells[2] == "-", row.id
        else:
            assert cells[2].startswith(row.peer + ": ")
            assert first_number(cells[2][len(row.peer):]) == row.peer_value, row.id
        assert (cells[3] == "-") if row.ratio is None else first_number(cells[3]) == row.ratio
        assert row.date in cells[4] and row.commit in cells[5] and row.command in cells[7]


def test_each_ratio_is_the_one_its_values_give_and_each_row_is_told_apart(
        figures_module: ModuleType) -> None:
    figures = figures_module.load()
    keys = [(row.figure, row.peer) for row in figures.rows]
    assert len(set(keys)) == len(keys), "two rows with the same figure and peer"
    for row in figures.rows:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", row.date), row.id
        assert re.fullmatch(r"[0-9a-f]{7,40}", row.commit), row.id
        if row.ratio is None:
            continue
        assert row.peer_value, row.id
        given = (row.value / row.peer_value if row.ratio_is == "stratus/peer"
                 else row.peer_value / row.value)
        # Within 2%: the sections' ratios come from unrounded values.
        assert abs(given - row.ratio) <= 0.02 * row.ratio, (row.id, given, row.ratio)


def test_a_row_predates_the_layers_that_landed_after_it(figures_module: ModuleType) -> None:
    figures = figures_module.load()
    batching = figures.row("batching-c32")  # 2026-12-01 09:11, before routing at 10:42
    assert [layer.name for layer in figures.predates(batching)] == [
        layer.name for layer in figures.layers]
    assert figures.predates(figures.row("noop-c32-rps-starlette")) == []
    simulated = figures.row("autoscale-hybrid-cold-replica")
    assert figures.predates(simulated) == [] and "simulation" in figures_module.notes_cell(
        figures, simulated)
    assert sorted(layer.since for layer in figures.layers) == [
        layer.since for layer in figures.layers]
