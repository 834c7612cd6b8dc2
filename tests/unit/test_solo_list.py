"""Every test marked ``solo`` lives in a file that ``make test``'s SOLO list names: the parallel
run deselects them (``-m "not solo"``) and only the SOLO files run after it, so a solo test
anywhere else would never run at all."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARK = "pytest.mark." + "solo"  # spelt apart, so that this file does not match itself


def _solo_list() -> set[str]:
    makefile = (ROOT / "Makefile").read_text()
    variables = dict(re.findall(r"^(\w+) := (.*)$", makefile, re.M))
    files: set[str] = set()
    for word in variables["SOLO"].split():
        reference = re.fullmatch(r"\$\((\w+)\)", word)
        files.update(variables[reference.group(1)].split() if reference else [word])
    return files


def test_every_solo_test_is_in_a_file_make_test_runs_alone() -> None:
    ours = [path for path in (ROOT / "tests").rglob("test_*.py")  # not the venvs' or caches'
            if not any(part.startswith(".") for part in path.relative_to(ROOT).parts)]
    marked = {str(path.relative_to(ROOT)) for path in ours if MARK in path.read_text()}
    assert marked, "the solo marker is used somewhere (the overload and fuzz tests)"
    missing = marked - _solo_list()
    assert not missing, f"marked solo but not in the Makefile's SOLO list: {sorted(missing)}"
