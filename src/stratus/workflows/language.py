"""A workflow definition once parsed: steps of six kinds, their links and policies. Plain frozen
data, built by ``parse`` and read by the stepping logic and the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["task", "parallel", "map", "choice", "succeed", "fail"]
KINDS: tuple[Kind, ...] = ("task", "parallel", "map", "choice", "succeed", "fail")
OPERATORS = ("equals", "not_equals", "gt", "gte", "lt", "lte", "exists", "in")


@dataclass(frozen=True, slots=True)
class Retry:
    """Attempts of a task: the first try and ``max_attempts - 1`` retries, with backoff."""

    max_attempts: int = 1
    base_s: float = 1.0
    cap_s: float = 30.0


@dataclass(frozen=True, slots=True)
class Catch:
    """On failure (of one of ``errors``' types, or of any when empty), go to ``next``."""

    next: str
    errors: tuple[str, ...] = ()
    line: int = 0

    def matches(self, error_type: str) -> bool:
        return not self.errors or error_type in self.errors


@dataclass(frozen=True, slots=True)
class Rule:
    """One choice: ``variable`` compared with ``value`` by ``operator``; if true, go ``next``."""

    variable: str
    operator: str
    value: Any
    next: str
    line: int = 0


@dataclass(frozen=True, slots=True)
class Step:
    id: str
    kind: Kind
    line: int = 0
    next: str | None = None
    end: bool = False
    timeout_s: float | None = None
    catch: Catch | None = None
    # task
    deployment: str | None = None
    input: Any = None  # a template; None: the kind's default ($.input, or $.item in a map)
    retry: Retry = field(default_factory=Retry)
    # parallel
    branches: tuple[tuple[Step, ...], ...] = ()
    # map
    items: str | None = None
    concurrency: int = 8
    iterator: Step | None = None
    # choice
    rules: tuple[Rule, ...] = ()
    default: str | None = None
    # succeed: output template (None: pass the previous output through); fail: error, cause
    output: Any = None
    error: str | None = None
    cause: str | None = None

    @property
    def terminal(self) -> bool:
        return self.kind in ("succeed", "fail")


@dataclass(frozen=True, slots=True)
class Workflow:
    name: str
    steps: tuple[Step, ...]
    timeout_s: float | None = None
    description: str = ""

    def deployments(self) -> list[tuple[str, Step]]:
        """Every (deployment, task step) the workflow calls, nested steps included."""
        return [(step.deployment, step) for step in walk(self.steps)
                if step.kind == "task" and step.deployment is not None]


def walk(steps: tuple[Step, ...]) -> list[Step]:
    """Every step, depth first: a parallel's branches and a map's iterator after it."""
    found: list[Step] = []
    for step in steps:
        found.append(step)
        for branch in step.branches:
            found.extend(walk(branch))
        if step.iterator is not None:
            found.extend(walk((step.iterator,)))
    return found
