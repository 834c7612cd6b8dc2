"""What runs next, given the step that just ended and how it ended: the stepping logic, pure.
The engine runs a step, asks ``decide``, records the answer, and does what it says; a resumed
execution replays its recorded outcomes through the same function."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from stratus.queue.retry import RetryPolicy
from stratus.workflows import refs
from stratus.workflows.language import Step
from stratus.workflows.validate import successor

State = Literal["succeeded", "failed", "caught"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a step ended: its output, or its error ({"type", "message"}), and for a choice the
    step it chose."""

    ok: bool
    output: Any = None
    error: dict[str, Any] | None = None
    chosen: str | None = None

    @property
    def error_type(self) -> str:
        return str((self.error or {}).get("type", "internal_error"))


@dataclass(frozen=True, slots=True)
class Go:
    """Run ``step`` next; ``caught``: it was reached by a catch, with the error as $.error."""

    step: Step
    caught: bool = False


@dataclass(frozen=True, slots=True)
class Finish:
    """The scope (the workflow, or a branch) succeeded with ``output``."""

    output: Any


@dataclass(frozen=True, slots=True)
class Fail:
    """The scope failed with ``error``."""

    error: dict[str, Any]


Decision = Go | Finish | Fail


def failure(error_type: str, message: str, **extra: Any) -> Outcome:
    return Outcome(False, None, {"type": error_type, "message": message, **extra})


def decide(steps: tuple[Step, ...], step: Step, outcome: Outcome) -> Decision:
    """The move after ``step`` (one of ``steps``, its scope) ended with ``outcome``."""
    by_id = {s.id: s for s in steps}
    if not outcome.ok:
        error = outcome.error or {"type": "internal_error", "message": "failed"}
        if step.catch is not None and step.catch.matches(outcome.error_type):
            return Go(by_id[step.catch.next], caught=True)
        return Fail({**error, "step": error.get("step", step.id)})
    if step.kind == "choice":
        if outcome.chosen is None:  # no rule held and no default: recorded as a failure
            return Fail({"type": "no_choice_matched", "step": step.id,
                         "message": f"no condition of choice {step.id!r} held, and it has no "
                                    "default"})
        return Go(by_id[outcome.chosen])
    if step.kind == "succeed":
        return Finish(outcome.output)
    target = successor(steps, steps.index(step))
    return Go(by_id[target]) if target is not None else Finish(outcome.output)


def state_of(decision: Decision, outcome: Outcome) -> State:
    """How a step's history row records it: a failure a catch handled is ``caught``."""
    if outcome.ok:
        return "succeeded"
    return "caught" if isinstance(decision, Go) else "failed"


def choose(step: Step, context: refs.Context, previous: Any) -> Outcome:
    """A choice step's outcome: the first rule that holds, else the default; its output is the
    output before it, passed through."""
    for rule in step.rules:
        if refs.holds(rule, context):
            return Outcome(True, previous, chosen=rule.next)
    if step.default is not None:
        return Outcome(True, previous, chosen=step.default)
    return Outcome(False, previous, {"type": "no_choice_matched",
                                     "message": f"no condition of choice {step.id!r} held, and "
                                                "it has no default"})


def terminal(step: Step, context: refs.Context, previous: Any) -> Outcome:
    """A succeed step's outcome (its output template, or the previous output) or a fail
    step's (its error and cause)."""
    if step.kind == "fail":
        return Outcome(False, None, {"type": step.error or "workflow_failed",
                                     "message": step.cause or f"step {step.id!r} failed"})
    if step.output is None:
        return Outcome(True, previous)
    try:
        return Outcome(True, refs.render(step.output, context))
    except refs.ReferenceFailed as exc:
        return failure("reference_error", str(exc))


def task_input(step: Step, context: refs.Context) -> Any:
    """A task's input: its template rendered, by default the execution's input (in a map, the
    element). Raises ReferenceFailed."""
    if step.input is None:
        return context.item if context.in_item else context.input
    return refs.render(step.input, context)


def policy(step: Step) -> RetryPolicy:
    return RetryPolicy(step.retry.max_attempts, step.retry.base_s, step.retry.cap_s)


def retry_delay(step: Step, attempts: int, status: int, error_type: str,
                rng: random.Random) -> float | None:
    """Seconds before another attempt of a task after ``attempts`` failed ones, or None when
    there is none: the attempts are spent, or the error is not worth retrying (bad input)."""
    rules = policy(step)
    if attempts >= rules.max_attempts or not rules.retryable(status, error_type):
        return None
    return rules.delay_s(attempts, rng)
