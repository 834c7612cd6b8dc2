"""Parsing and validating workflow definitions, pure: what is accepted, and for what is not, a
400 whose message names the line and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stratus.errors import BadRequest
from stratus.workflows.parse import parse_text
from stratus.workflows.refs import parse as parse_reference

FULL = """\
name: pipeline
description: every kind of step
timeout_s: 30
steps:
  - id: prep
    type: task
    deployment: prep
    input: {a: $.input.x, rows: "$.input.rows[0]", literal: $$.not-a-ref}
    retry: {max_attempts: 4, base_s: 0.5, cap_s: 5}
    timeout_s: 2
    catch: {next: broken, errors: [handler_error]}
  - id: fan
    type: parallel
    branches:
      - - {id: left, type: task, deployment: infer}
      - - {id: right, type: task, deployment: infer, end: true}
  - id: each
    type: map
    items: $.steps.prep.output.items
    concurrency: 3
    step: {id: one, type: task, deployment: infer, input: {x: $.item, i: $.index}}
  - id: check
    type: choice
    choices:
      - {variable: $.steps.prep.output.score, gte: 0.5, next: good}
      - {variable: $.steps.prep.output.flag, exists: true, next: again}
    default: bad
  - id: again
    type: task
    deployment: prep
    next: check
  - id: good
    type: succeed
    output: {each: $.steps.each.output}
  - id: bad
    type: fail
    error: low_score
    cause: the score is low
  - id: broken
    type: fail
"""


def _error(text: str) -> str:
    with pytest.raises(BadRequest) as caught:
        parse_text(text)
    return caught.value.message


def test_a_full_definition_parses_into_its_steps() -> None:
    workflow = parse_text(FULL)
    assert workflow.name == "pipeline" and workflow.timeout_s == 30
    assert [s.id for s in workflow.steps] == ["prep", "fan", "each", "check", "again", "good",
                                              "bad", "broken"]
    prep = workflow.steps[0]
    assert prep.retry.max_attempts == 4 and prep.timeout_s == 2 and prep.line == 5
    assert prep.catch is not None and prep.catch.next == "broken"
    assert prep.catch.errors == ("handler_error",)
    assert [b[0].id for b in workflow.steps[1].branches] == ["left", "right"]
    assert workflow.steps[2].iterator is not None and workflow.steps[2].concurrency == 3
    assert [r.operator for r in workflow.steps[3].rules] == ["gte", "exists"]
    assert sorted({d for d, _ in workflow.deployments()}) == ["infer", "prep"]


def test_json_is_accepted_too() -> None:
    text = json.dumps({"name": "j", "steps": [{"id": "a", "type": "task", "deployment": "d"}]})
    assert parse_text(text).steps[0].deployment == "d"


@pytest.mark.parametrize(("text", "words"), [
    ("name: x\nsteps:\n  - id: a\n    type: task\n    deploymnt: d\n",
     ["line 5", "steps[0].deploymnt", "unknown field"]),
    ("name: x\nsteps:\n  - id: a\n    type: task\n", ["line 3", "steps[0].deployment", "missing"]),
    ("name: x\nsteps:\n  - id: a\n    type: task\n    deployment: d\n    timeout_s: soon\n",
     ["line 6", "steps[0].timeout_s", "expected"]),
    ("name: x\nsteps:\n  - id: a\n    type: task\n    deployment: d\n"
     "    retry: {max_attempts: 0}\n", ["line 6", "steps[0].retry.max_attempts", "between"]),
    ("name: x\nsteps:\n  - id: a\n    type: teleport\n", ["line 4", "steps[0].type", "teleport"]),
    ("name: x\nsteps:\n  - id: a\n    type: task\n    deployment: d\n  - id: a\n    type: succeed\n",
     ["line 6", "steps[1].id", "already used at line 3"]),
    ("name: x\nsteps: {a: 1}\n", ["line 2", "steps", "list of steps"]),
    ("name: x\nsteps:\n  - id: a\n    type: task\n  deployment: d\n",
     ["line 5", "malformed YAML"]),
    ("name: X_bad\nsteps:\n  - {id: a, type: succeed}\n", ["line 1", "name"]),
    ("steps:\n  - {id: a, type: succeed}\n", ["line 1", "name", "missing"]),
    ("name: x\nsteps:\n  - id: c\n    type: choice\n    choices:\n"
     "      - {variable: $.input.v, gt: 1, lt: 3, next: c}\n",
     ["line 6", "choices[0]", "exactly one operator"]),
    ("name: x\nsteps:\n  - id: a\n    type: task\n    deployment: d\n    input: {v: $.nothing}\n",
     ["line 6", "steps[0].input", "$.input"]),
    ("name: x\nsteps:\n  - id: a\n    type: task\n    deployment: d\n    next: b\n    end: true\n"
     "  - {id: b, type: succeed}\n", ["line 7", "steps[0].end", "not both"]),
])
def test_a_bad_field_is_named_with_its_line(text: str, words: list[str]) -> None:
    message = _error(text)
    for word in words:
        assert word in message, message


def test_an_unconditional_loop_is_refused_and_a_loop_through_a_choice_is_not() -> None:
    loop = ("name: x\nsteps:\n  - {id: a, type: task, deployment: d}\n"
            "  - {id: b, type: task, deployment: d}\n  - {id: c, type: task, deployment: d, "
            "next: b}\n")
    message = _error(loop)
    assert "line 4" in message and "b -> c -> b" in message and "choice" in message
    through_choice = ("name: x\nsteps:\n  - {id: a, type: task, deployment: d}\n"
                      "  - id: c\n    type: choice\n    choices:\n"
                      "      - {variable: $.steps.a.output.more, equals: true, next: a}\n"
                      "    default: done\n  - {id: done, type: succeed}\n")
    assert [s.id for s in parse_text(through_choice).steps] == ["a", "c", "done"]


def test_a_choice_loop_with_no_way_out_is_refused() -> None:
    text = ("name: x\nsteps:\n  - {id: a, type: task, deployment: d}\n"
            "  - id: c\n    type: choice\n    choices:\n"
            "      - {variable: $.input.v, equals: 1, next: a}\n    default: a\n")
    assert "loops back without end" in _error(text)


def test_a_catch_into_a_loop_is_refused() -> None:
    text = ("name: x\nsteps:\n  - {id: a, type: task, deployment: d, catch: {next: b}}\n"
            "  - {id: b, type: task, deployment: d, next: c}\n"
            "  - {id: c, type: task, deployment: d, next: b}\n")
    assert "b -> c -> b" in _error(text)


def test_links_and_references_must_name_known_steps_in_scope() -> None:
    assert "unknown step 'z'" in _error(
        "name: x\nsteps:\n  - {id: a, type: task, deployment: d, next: z}\n")
    assert "unknown step 'z'" in _error(
        "name: x\nsteps:\n  - id: c\n    type: choice\n"
        "    choices: [{variable: $.input.v, equals: 1, next: z}]\n")
    assert "another scope" in _error(
        "name: x\nsteps:\n  - id: p\n    type: parallel\n    branches:\n"
        "      - - {id: inner, type: task, deployment: d}\n"
        "  - {id: a, type: task, deployment: d, next: inner}\n")
    message = _error("name: x\nsteps:\n  - id: a\n    type: task\n    deployment: d\n"
                     "    input: {v: $.steps.ghost.output.v}\n")
    assert "line 3" in message and "unknown step 'ghost'" in message
    assert "only defined inside a map" in _error(
        "name: x\nsteps:\n  - {id: a, type: task, deployment: d, input: $.item}\n")


def test_references_parse_into_paths() -> None:
    assert parse_reference("$.steps.a.output.rows[2].name") == (
        "steps", "a", "output", "rows", 2, "name")
    assert parse_reference("$.input") == ("input",)
    for bad in ("$.steps.a", "$.steps.a.input", "$.input..x", "$.input[x]", "input.x"):
        with pytest.raises(ValueError):
            parse_reference(bad)


def test_empty_and_oversized_definitions() -> None:
    assert "empty" in _error("   \n")
    assert "at most" in _error(b"#" * (300 * 1024))  # type: ignore[arg-type]


def test_the_documented_example_is_a_valid_workflow() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "workflows.md").read_text()
    text = doc.split("## A full example", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    workflow = parse_text(text)
    assert workflow.name == "pipeline" and len(workflow.steps) == 7
    assert sorted({d for d, _ in workflow.deployments()}) == [
        "embedder", "keywords", "preprocess", "ranker", "reporter", "scorer", "summariser"]
