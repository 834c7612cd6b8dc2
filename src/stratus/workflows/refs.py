"""References (``$.input.a[0]``, ``$.steps.<id>.output.x``, ``$.item``, ``$.index``, ``$.error``),
the input templates built from them, and the choice conditions that test them. Pure."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from stratus.workflows.language import Rule

ROOTS = ("input", "steps", "item", "index", "error")
_SEGMENT = re.compile(r"\.([A-Za-z0-9_-]+)|\[(\d+)\]")
Path = tuple[str | int, ...]


class ReferenceFailed(Exception):
    """A reference names nothing in this execution (yet): a missing field, an index out of
    range, a step that has not run. The step fails with the error type ``reference_error``."""


def is_reference(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("$.")


def parse(text: str) -> Path:
    """``$.steps.a.output.rows[0]`` as ("steps", "a", "output", "rows", 0). Raises ValueError
    saying what is wrong with it."""
    if not text.startswith("$."):
        raise ValueError(f"a reference starts with '$.': {text!r}")
    segments: list[str | int] = []
    position = 1
    while position < len(text):
        match = _SEGMENT.match(text, position)
        if match is None:
            raise ValueError(f"cannot read reference {text!r} at character {position + 1}: "
                             "use .name and [index]")
        name, index = match.groups()
        segments.append(name if name is not None else int(index))
        position = match.end()
    root = segments[0]
    if root not in ROOTS:
        raise ValueError(f"reference {text!r} starts with {root!r}; it may start with "
                         + ", ".join(f"$.{r}" for r in ROOTS))
    if root == "steps" and (len(segments) < 3 or not isinstance(segments[1], str)
                            or segments[2] != "output"):
        raise ValueError(f"a step's reference reads $.steps.<id>.output...: {text!r}")
    return tuple(segments)


def references(template: Any) -> Iterator[str]:
    """Every reference a template holds, at any depth."""
    if is_reference(template):
        yield template
    elif isinstance(template, dict):
        for value in template.values():
            yield from references(value)
    elif isinstance(template, list):
        for value in template:
            yield from references(value)


@dataclass
class Context:
    """What references read in one scope: the execution's input, the outputs of the steps run so
    far, and inside a map's item its element and index. A scope inherits its parent's."""

    input: Any
    steps: dict[str, Any] = field(default_factory=dict)
    item: Any = None
    index: int | None = None
    error: Any = None
    in_item: bool = False
    parent: Context | None = None

    def child_for_item(self, item: Any, index: int) -> Context:
        return Context(self.input, {}, item, index, None, True, self)

    def child_for_branch(self) -> Context:
        # Branches share the steps' table: step ids are unique in the whole workflow.
        return Context(self.input, self.steps, self.item, self.index, self.error, self.in_item,
                       self.parent)

    def step_output(self, step_id: str) -> Any:
        scope: Context | None = self
        while scope is not None:
            if step_id in scope.steps:
                return scope.steps[step_id]
            scope = scope.parent
        raise ReferenceFailed(f"step {step_id!r} has not run before this one")

    def root(self, name: str) -> Any:
        if name == "input":
            return self.input
        if name in ("item", "index"):
            if not self.in_item:
                raise ReferenceFailed(f"$.{name} is only defined inside a map")
            return self.item if name == "item" else self.index
        if self.error is None:
            raise ReferenceFailed("$.error is only defined in a step reached by a catch")
        return self.error


def resolve(text: str, context: Context) -> Any:
    path = parse(text)
    if path[0] == "steps":
        value, rest = context.step_output(str(path[1])), path[3:]
    else:
        value, rest = context.root(str(path[0])), path[1:]
    for depth, segment in enumerate(rest):
        if _has(value, segment):
            value = value[segment]
        else:
            where = text if depth == len(rest) - 1 else f"{text} (at {segment!r})"
            raise ReferenceFailed(f"{where} names nothing in {_preview(value)}")
    return value


def _has(value: Any, segment: str | int) -> bool:
    if isinstance(segment, int):
        return isinstance(value, list) and segment < len(value)
    return isinstance(value, dict) and segment in value


def render(template: Any, context: Context) -> Any:
    """The template with each reference replaced by what it names; ``$$.`` stays a literal
    string starting with ``$.``."""
    if isinstance(template, str):
        if template.startswith("$$."):
            return template[1:]
        return resolve(template, context) if template.startswith("$.") else template
    if isinstance(template, dict):
        return {key: render(value, context) for key, value in template.items()}
    if isinstance(template, list):
        return [render(value, context) for value in template]
    return template


def holds(rule: Rule, context: Context) -> bool:
    """Whether a choice rule is true. A missing variable makes every operator false but
    ``exists: false``; values of types that do not compare are simply not equal / not ordered."""
    try:
        value = resolve(rule.variable, context)
    except ReferenceFailed:
        return rule.operator == "exists" and rule.value is False
    expected = rule.value
    if rule.operator == "exists":
        return bool(expected)
    if rule.operator == "equals":
        return _same(value, expected)
    if rule.operator == "not_equals":
        return not _same(value, expected)
    if rule.operator == "in":
        return isinstance(expected, list) and value in expected
    if not _comparable(value, expected):
        return False
    if rule.operator == "gt":
        return bool(value > expected)
    if rule.operator == "gte":
        return bool(value >= expected)
    if rule.operator == "lt":
        return bool(value < expected)
    return bool(value <= expected)  # lte


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):  # true is not 1 here, as in JSON
        return type(a) is type(b) and a == b
    return bool(a == b)


def _comparable(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    return (isinstance(a, numbers) and isinstance(b, numbers)) or (
        isinstance(a, str) and isinstance(b, str))


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
