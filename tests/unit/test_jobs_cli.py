"""The jobs CLI's pure parts: typed --param values, the entrypoint relative to the bundle's
root, and the rows of `stratus runs compare`."""

from __future__ import annotations

from pathlib import Path

import pytest

from stratus.cli.client import CliError
from stratus.cli.jobs import entrypoint_of, parse_param
from stratus.cli.runs import comparison


def test_param_values_that_read_as_json_scalars_are_typed() -> None:
    assert parse_param("epochs=20") == ("epochs", 20)
    assert parse_param("lr=1e-3") == ("lr", 0.001)
    assert parse_param("fast=true") == ("fast", True)
    assert parse_param("seed=null") == ("seed", None)
    assert parse_param("name=resnet") == ("name", "resnet")
    assert parse_param("layers=[1,2]") == ("layers", "[1,2]")  # not a scalar: kept as text
    assert parse_param("expr=a=b") == ("expr", "a=b")
    for bad in ("epochs", "=3"):
        with pytest.raises(CliError, match="NAME=VALUE"):
            parse_param(bad)


def test_the_entrypoint_is_relative_to_the_bundles_root(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    source = tmp_path / "src" / "train.py"
    source.write_text("def train(ctx): pass\n")
    assert entrypoint_of(f"{source}:train", None) == (tmp_path / "src", "train.py:train")
    assert entrypoint_of(f"{source}:train", tmp_path) == (tmp_path, "src/train.py:train")
    with pytest.raises(CliError, match="not inside --dir"):
        entrypoint_of(f"{source}:train", tmp_path / "elsewhere")
    with pytest.raises(CliError, match="does not exist"):
        entrypoint_of(f"{tmp_path}/missing.py:train", None)
    with pytest.raises(CliError, match="must look like"):
        entrypoint_of(f"{source}:not-a-name", None)


def test_runs_are_compared_row_by_row_with_the_differences_marked() -> None:
    runs = [{"status": "succeeded", "experiment": "e", "params": {"lr": 0.1, "epochs": 5},
             "metrics": {"loss": 0.25}},
            {"status": "failed", "experiment": "e", "params": {"lr": 0.2, "epochs": 5},
             "metrics": {}}]
    assert comparison(runs) == [
        ("status", ["succeeded", "failed"], True),
        ("experiment", ["e", "e"], False),
        ("param epochs", ["5", "5"], False),
        ("param lr", ["0.1", "0.2"], True),
        ("metric loss", ["0.25", "-"], True),
    ]
