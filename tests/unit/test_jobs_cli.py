"""The jobs CLI's pure parts: typed --param values, the entrypoint relative to the bundle's
root, the job body `jobs run` and `jobs schedule` both make, what `schedule ls` says a schedule
runs, and the rows of `stratus runs compare`."""

from __future__ import annotations

from pathlib import Path

import pytest

from stratus.cli.client import CliError
from stratus.cli.job_options import JobOptions, entrypoint_of, job_body, parse_param
from stratus.cli.runs import comparison
from stratus.cli.schedules import target_of
from stratus.jobs.request import JobRequest


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


def test_the_job_body_is_what_post_jobs_takes() -> None:
    body = job_body(JobOptions(
        datasets=["iris"], params=["epochs=3", "lr=0.1"], experiment="iris", threads=2,
        preload=["sklearn"], env=["A=1", "B=x=y"], register="iris", gate=["accuracy>=0.9"],
        gate_vs="production", tolerance=0.01, gate_split="train", deploy="svc", canary=10))
    assert body["params"] == {"epochs": 3, "lr": 0.1} and body["env"] == {"A": "1", "B": "x=y"}
    assert body["register"]["deploy"] == {"deployment": "svc", "canary": 10}
    assert body["register"]["split"] == "train" and body["register"]["gate_vs"] == "production"
    request = JobRequest.model_validate({**body, "code": {"bundle": "a" * 64,
                                                          "entrypoint": "train.py:train"}})
    assert request.registration is not None and request.registration.tolerance == 0.01
    assert request.preload == ["sklearn"] and request.threads == 2
    assert "register" not in job_body(JobOptions())


@pytest.mark.parametrize(("options", "words"), [
    (JobOptions(gate=["accuracy>=0.9"]), "--register"),
    (JobOptions(deploy="svc"), "--register"),
    (JobOptions(register="iris", canary=10), "--deploy"),
    (JobOptions(env=["NOVALUE"]), "--env"),
    (JobOptions(params=["epochs"]), "--param"),
])
def test_options_that_make_no_sense_alone_are_refused(options: JobOptions, words: str) -> None:
    with pytest.raises(CliError, match=words):
        job_body(options)


def test_schedule_ls_says_what_each_tick_runs() -> None:
    assert target_of({"target": "invocation", "deployment": "echo"}) == "deployment echo"
    assert target_of({"deployment": "echo"}) == "deployment echo"  # from an older server
    job = {"code": {"bundle": "a" * 64, "entrypoint": "train.py:train"}}
    assert target_of({"target": "job", "deployment": None, "job": job}) == "job train.py:train"
