"""examples/llm/demo.py says, for each package it needs that is missing, which extra of
pyproject.toml brings it, and that ``make demo-llm`` installs it."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest

from smollm2 import llm_demo

ROOT = Path(__file__).resolve().parents[2]


def test_each_missing_package_is_named_with_the_extra_that_brings_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    demo = llm_demo()
    assert demo.missing_package() is None  # the suite's venv has both
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert set(demo.EXTRAS) == {"gguf", "openai"}
    for name in demo.EXTRAS:
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, name, None)  # `import name` raises ImportError
            message = demo.missing_package()
        assert message is not None and message.startswith(f"{name} is missing: run `make "
                                                           "demo-llm`, which installs it"), message
        found = re.search(r"pip install -e '\.\[(\w+)\]'", message)
        assert found is not None, message
        assert any(requirement.startswith(f"{name}==") for requirement in extras[found[1]]), \
            f"the {found[1]!r} extra does not bring {name}"
        with pytest.raises(SystemExit, match=f"{name} is missing"), monkeypatch.context() as patch:
            patch.setitem(sys.modules, name, None)
            demo.main()
