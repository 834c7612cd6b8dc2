"""How the CLI lays out text: help reflowed from docstrings, sizes in binary units, and the
deployment name derived from a file."""

from __future__ import annotations

from pathlib import Path

from stratus.cli.help_layout import reflow
from stratus.cli.naming import declares_name, derived_name
from stratus.cli.terminal import size_text


def test_reflow_joins_the_source_line_breaks_of_a_paragraph() -> None:
    doc = """Move traffic to a revision: all at once when it is warm, or step
        by step, then watch it.

        What is not given comes from the
        deployment's settings.
        """
    assert reflow(doc) == ("Move traffic to a revision: all at once when it is warm, or step by "
                           "step, then watch it.\n\nWhat is not given comes from the "
                           "deployment's settings.")


def test_reflow_keeps_lists_and_marked_blocks() -> None:
    doc = "Kinds:\n\n- one\n- two\n\n\b\nline one\nline two"
    assert reflow(doc) == "Kinds:\n\n- one\n- two\n\nline one\nline two"


def test_sizes_are_binary() -> None:
    assert size_text(512) == "512 B"
    assert size_text(1536) == "1.5 KiB"
    assert size_text(141 * 2**20 + 2**19) == "141.5 MiB"
    assert size_text(3 * 2**30) == "3.0 GiB"


def test_derived_names() -> None:
    assert derived_name(Path("app.py")) == "app"
    assert derived_name(Path("My_Model.v2.py")) == "my-model-v2"
    assert derived_name(Path("___.py")) is None
    assert derived_name(Path(("x" * 70) + ".py")) == "x" * 63


def test_a_decorator_name_is_seen_without_importing(tmp_path: Path) -> None:
    source = tmp_path / "app.py"
    source.write_text("import stratus\nfrom stratus import deployment\n\n"
                      "@stratus.deployment(name='a')\nclass A: ...\n\n"
                      "@deployment(max_replicas=2)\nclass B: ...\n\n"
                      "def handler(event, context): ...\n")
    assert declares_name(source, "A")
    assert not declares_name(source, "B") and not declares_name(source, "handler")
