"""The current figures: bench/current_figures.json read into rows, and rendered as the table of
docs/benchmarks.md's "Current figures" section (its twin, which a test keeps in step).

    .venv/bin/python bench/current_figures.py           # print the section's generated part
    .venv/bin/python bench/current_figures.py --write   # replace it in docs/benchmarks.md

The JSON is the source: edit a row there when a section of docs/benchmarks.md or
docs/reliability.md records a newer run, then ``--write``. bench/budget.py compares its quick
runs against these rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

BENCH_DIR = Path(__file__).resolve().parent
FIGURES_JSON = BENCH_DIR / "current_figures.json"
BENCHMARKS_MD = BENCH_DIR.parent / "docs" / "benchmarks.md"
# The generated part of the section lies between these two lines of docs/benchmarks.md.
BEGIN = ("<!-- current figures: generated from bench/current_figures.json"
         " by bench/current_figures.py --write -->")
END = "<!-- end of current figures -->"
HEADERS = ("figure", "Stratus", "peer in the same run", "ratio", "date (UTC)", "commit",
           "machine", "command", "where", "notes")

Better = Literal["higher", "lower"]


@dataclass(frozen=True)
class Layer:
    """Something on the request path since ``since``: a figure measured before it predates it."""

    name: str
    since: str
    commit: str
    what: str


@dataclass(frozen=True)
class Row:
    id: str
    figure: str
    value: float
    unit: str
    better: Better
    peer: str | None
    peer_value: float | None
    ratio: float | None
    ratio_is: Literal["stratus/peer", "peer/stratus"] | None
    date: str  # "YYYY-MM-DD HH:MM", UTC: compared as text with a layer's ``since``
    commit: str
    machine: str
    command: str
    request_path: bool  # False: a simulation, which no layer of the request path touches
    note: str
    section_title: str
    section_link: str  # relative to docs/


@dataclass(frozen=True)
class Figures:
    about: str
    layers: tuple[Layer, ...]
    rows: tuple[Row, ...]

    def row(self, row_id: str) -> Row:
        for row in self.rows:
            if row.id == row_id:
                return row
        raise KeyError(f"{row_id}: no such row in {FIGURES_JSON.name}")

    def predates(self, row: Row) -> list[Layer]:
        """The request-path layers that landed after ``row`` was measured."""
        if not row.request_path:
            return []
        return [layer for layer in self.layers if layer.since > row.date]


def _row(raw: dict[str, Any]) -> Row:
    section = raw.pop("section")
    if raw["better"] not in ("higher", "lower"):
        raise ValueError(f"{raw['id']}: better must be higher or lower, not {raw['better']!r}")
    if (raw["ratio"] is None) != (raw["ratio_is"] is None):
        raise ValueError(f"{raw['id']}: ratio and ratio_is go together")
    return Row(**raw, section_title=section["title"], section_link=section["link"])


def load(path: Path = FIGURES_JSON) -> Figures:
    raw = json.loads(path.read_text())
    rows = tuple(_row(dict(row)) for row in raw["rows"])
    ids = [row.id for row in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path.name}: duplicate row ids")
    return Figures(raw["about"], tuple(Layer(**layer) for layer in raw["layers"]), rows)


# --------------------------------------------------------------------------- rendering


def number(value: float) -> str:
    """As the JSON holds it, with thousands separators: 5412 -> 5,412, 0.611 -> 0.611."""
    return f"{value:,}"


def ratio_cell(row: Row) -> str:
    if row.ratio is None:
        return "-"
    way = "Stratus / peer" if row.ratio_is == "stratus/peer" else "peer / Stratus"
    return f"{number(row.ratio)}x ({way})"


def notes_cell(figures: Figures, row: Row) -> str:
    notes = [row.note] if row.note else []
    if not row.request_path:
        notes.append("a simulation: the request path does not enter it")
    layers = figures.predates(row)
    if layers:
        notes.append("predates " + ", ".join(layer.name for layer in layers))
    return "; ".join(notes) or "-"


def cells(figures: Figures, row: Row) -> list[str]:
    peer = "-" if row.peer is None else f"{row.peer}: {number(row.peer_value or 0)} {row.unit}"
    return [
        row.figure,
        f"{number(row.value)} {row.unit}",
        peer,
        ratio_cell(row),
        row.date,
        f"`{row.commit}`",
        row.machine,
        f"`{row.command}`",
        f"[{row.section_title}]({row.section_link})",
        notes_cell(figures, row),
    ]


def markdown(figures: Figures) -> str:
    """The generated part of the section: the layers' legend, then the table."""
    lines = [BEGIN, "", "Layers now on the request path, each dated by the first run in these pages",
             "that includes it (a row's notes name those it predates):", ""]
    lines += [f"- **{layer.name}** ({layer.since}, `{layer.commit}`): {layer.what}"
              for layer in figures.layers]
    lines += ["", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(cells(figures, row)) + " |" for row in figures.rows]
    lines += ["", END]
    return "\n".join(lines)


def replace_section(document: str, generated: str) -> str:
    """``document`` with the text from BEGIN to END (both included) replaced by ``generated``."""
    start, end = document.index(BEGIN), document.index(END) + len(END)
    return document[:start] + generated + document[end:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--write", action="store_true", help=f"replace the table in {BENCHMARKS_MD.name}")
    args = parser.parse_args()
    generated = markdown(load())
    if not args.write:
        print(generated)
        return 0
    BENCHMARKS_MD.write_text(replace_section(BENCHMARKS_MD.read_text(), generated))
    print(f"wrote the current figures into {BENCHMARKS_MD}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
