"""The stepping logic, pure: what runs next after a step ends, how references and choices read
the execution's data, and which failures a task retries."""

from __future__ import annotations

import random

import pytest

from stratus.workflows import refs
from stratus.workflows.parse import parse_text
from stratus.workflows.stepping import (
    Fail,
    Finish,
    Go,
    Outcome,
    choose,
    decide,
    failure,
    retry_delay,
    state_of,
    task_input,
    terminal,
)

WORKFLOW = parse_text("""\
name: w
steps:
  - {id: a, type: task, deployment: d, input: {x: $.input.x, y: $.steps.a.output.v}}
  - {id: b, type: task, deployment: d, catch: {next: fix, errors: [handler_error]},
     retry: {max_attempts: 3, base_s: 1, cap_s: 4}}
  - id: c
    type: choice
    choices:
      - {variable: $.steps.b.output.n, gt: 10, next: big}
      - {variable: $.steps.b.output.tag, in: [x, y], next: fix}
      - {variable: $.steps.b.output.missing, exists: false, next: done}
  - {id: fix, type: task, deployment: d, next: done}
  - {id: big, type: succeed, output: {n: $.steps.b.output.n}}
  - {id: done, type: succeed}
  - {id: stop, type: fail, error: gave_up, cause: nothing left}
""")
STEPS = WORKFLOW.steps
BY_ID = {step.id: step for step in STEPS}


def test_a_step_goes_on_to_the_next_in_the_list_or_to_its_next() -> None:
    assert decide(STEPS, BY_ID["a"], Outcome(True, {"v": 1})) == Go(BY_ID["b"])
    assert decide(STEPS, BY_ID["fix"], Outcome(True, 1)) == Go(BY_ID["done"])
    assert decide(STEPS, BY_ID["done"], Outcome(True, 7)) == Finish(7)
    last = parse_text("name: w\nsteps:\n  - {id: only, type: task, deployment: d}\n").steps
    assert decide(last, last[0], Outcome(True, 3)) == Finish(3)
    ended = parse_text("name: w\nsteps:\n  - {id: p, type: task, deployment: d, end: true}\n"
                       "  - {id: q, type: succeed}\n").steps
    assert decide(ended, ended[0], Outcome(True, 5)) == Finish(5)


def test_a_failure_goes_to_its_catch_when_the_type_matches_else_fails_the_scope() -> None:
    handler = failure("handler_error", "boom")
    move = decide(STEPS, BY_ID["b"], handler)
    assert move == Go(BY_ID["fix"], caught=True) and state_of(move, handler) == "caught"
    other = failure("timeout", "slow")
    move = decide(STEPS, BY_ID["b"], other)
    assert isinstance(move, Fail) and move.error["step"] == "b"
    assert state_of(move, other) == "failed"
    assert isinstance(decide(STEPS, BY_ID["a"], handler), Fail)


def test_choices_take_the_first_rule_that_holds() -> None:
    context = refs.Context({"x": 1})
    context.steps["b"] = {"n": 11, "tag": "x"}
    outcome = choose(BY_ID["c"], context, "previous")
    assert outcome == Outcome(True, "previous", chosen="big")
    assert decide(STEPS, BY_ID["c"], outcome) == Go(BY_ID["big"])
    context.steps["b"] = {"n": 3, "tag": "y"}
    assert choose(BY_ID["c"], context, None).chosen == "fix"
    context.steps["b"] = {"n": "11", "tag": "z"}  # a string is not greater than a number
    assert choose(BY_ID["c"], context, None).chosen == "done"
    context.steps["b"] = {"n": 1, "tag": "z", "missing": 0}
    unmatched = choose(BY_ID["c"], context, None)
    assert not unmatched.ok and unmatched.error_type == "no_choice_matched"
    assert isinstance(decide(STEPS, BY_ID["c"], unmatched), Fail)


@pytest.mark.parametrize(("operator", "value", "actual", "holds"), [
    ("equals", 1, 1, True), ("equals", 1, True, False), ("equals", "a", "a", True),
    ("not_equals", 1, 2, True), ("gt", 1, 2, True), ("gte", 2, 2, True), ("lt", 2, 2, False),
    ("lte", "b", "a", True), ("gt", 1, None, False), ("in", [1, 2], 2, True),
    ("exists", True, 0, True), ("equals", {"k": [1]}, {"k": [1]}, True),
])
def test_operators(operator: str, value: object, actual: object, holds: bool) -> None:
    rule = refs.Rule("$.input.v", operator, value, "x")
    assert refs.holds(rule, refs.Context({"v": actual})) is holds


def test_templates_render_references_and_report_missing_ones() -> None:
    context = refs.Context({"x": [10, {"k": "v"}]})
    context.steps["a"] = {"v": 3}
    assert task_input(BY_ID["a"], context) == {"x": [10, {"k": "v"}], "y": 3}
    assert refs.render({"l": ["$.input.x[1].k", "$$.lit", 4]}, context) == {
        "l": ["v", "$.lit", 4]}
    with pytest.raises(refs.ReferenceFailed, match="names nothing"):
        refs.render("$.input.x[5]", context)
    with pytest.raises(refs.ReferenceFailed, match="has not run"):
        refs.render("$.steps.b.output", context)
    item = context.child_for_item({"id": 7}, 2)
    assert refs.render(["$.item.id", "$.index", "$.steps.a.output.v"], item) == [7, 2, 3]
    assert task_input(BY_ID["b"], context) == {"x": [10, {"k": "v"}]}  # default: the input
    assert task_input(BY_ID["b"], item) == {"id": 7}  # in a map: the element


def test_terminal_steps() -> None:
    context = refs.Context({})
    context.steps["b"] = {"n": 12}
    assert terminal(BY_ID["big"], context, None) == Outcome(True, {"n": 12})
    assert terminal(BY_ID["done"], context, "prev") == Outcome(True, "prev")
    stopped = terminal(BY_ID["stop"], context, None)
    assert stopped.error == {"type": "gave_up", "message": "nothing left"}


def test_retries_follow_the_policy_and_skip_bad_input() -> None:
    rng = random.Random(1)
    step = BY_ID["b"]
    first = retry_delay(step, 1, 500, "handler_error", rng)
    assert first is not None and 0 <= first <= 1
    second = retry_delay(step, 2, 504, "timeout", rng)
    assert second is not None and 0 <= second <= 2
    assert retry_delay(step, 3, 500, "handler_error", rng) is None  # attempts spent
    assert retry_delay(step, 1, 400, "invalid_request", rng) is None  # bad input
    assert retry_delay(step, 1, 429, "overloaded", rng) is not None
    assert retry_delay(BY_ID["a"], 1, 500, "handler_error", rng) is None  # no retry given
