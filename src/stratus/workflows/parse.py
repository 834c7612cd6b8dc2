"""A workflow's YAML or JSON text into a ``Workflow``, keeping each node's line so that every
error names the line and the field (``line 7: steps[1].retry.max_attempts: ...``). Pure."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from stratus.errors import BadRequest
from stratus.spec import NAME_PATTERN
from stratus.workflows import refs
from stratus.workflows.language import KINDS, OPERATORS, Catch, Retry, Rule, Step, Workflow
from stratus.workflows.validate import check_graph

# libyaml's parser when it is there: the same nodes and marks, several times faster.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
STEP_ID = r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$"
MAX_TEXT_BYTES = 256 * 1024
COMMON = ("id", "type", "comment")
LINKS = ("next", "end")
BY_KIND: dict[str, tuple[str, ...]] = {
    "task": (*LINKS, "deployment", "input", "retry", "catch", "timeout_s"),
    "parallel": (*LINKS, "branches", "catch", "timeout_s"),
    "map": (*LINKS, "items", "step", "concurrency", "catch", "timeout_s"),
    "choice": ("choices", "default"),
    "succeed": ("output",),
    "fail": ("error", "cause"),
}

ANY_STEP = tuple(sorted({*COMMON, *(name for names in BY_KIND.values() for name in names)}))


class _Fields:
    """A mapping node's fields, taken one by one; what is left over is an unknown field."""

    def __init__(self, loader: yaml.SafeLoader, node: Node, path: str) -> None:
        if not isinstance(node, MappingNode):
            raise _error(node, path, f"expected a mapping, got {_shape(node)}")
        self.loader, self.node, self.path = loader, node, path
        self.fields: dict[str, tuple[Node, Node]] = {}
        for key, value in node.value:
            name = loader.construct_object(key, deep=True)
            if not isinstance(name, str):
                raise _error(key, path, f"field names are strings, got {name!r}")
            if name in self.fields:
                raise _error(key, self.at(name), "given twice")
            self.fields[name] = (key, value)

    def at(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        return name in self.fields

    def node_of(self, name: str, required: bool = False) -> Node | None:
        if name not in self.fields:
            if required:
                raise _error(self.node, self.at(name), "missing field")
            return None
        return self.fields.pop(name)[1]

    def value(self, name: str, kind: type | tuple[type, ...], required: bool = False) -> Any:
        node = self.node_of(name, required)
        if node is None:
            return None
        value = self.loader.construct_object(node, deep=True)
        wanted = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in wanted) or not isinstance(value, wanted):
            names = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in wanted)
            raise _error(node, self.at(name), f"expected {names}, got {_describe(value)}")
        return value

    def number(self, name: str, low: float, high: float, integer: bool = False) -> Any:
        node = self.fields.get(name, (None, None))[1]
        value = self.value(name, int if integer else (int, float))
        if value is not None and not low <= value <= high:
            assert node is not None
            raise _error(node, self.at(name), f"must be between {low:g} and {high:g}, got {value}")
        return value

    def line_of(self, name: str) -> int:
        return _line(self.fields[name][1]) if name in self.fields else _line(self.node)

    def known(self, allowed: tuple[str, ...]) -> None:
        """Checked first, so that a misspelt field is named as such, not as a missing one."""
        for name, (key, _value) in self.fields.items():
            if name not in allowed:
                raise _error(key, self.at(name),
                             f"unknown field (allowed here: {', '.join(sorted(allowed))})")


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "a mapping"}


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _error(node: Node, path: str, problem: str) -> BadRequest:
    return BadRequest(f"line {_line(node)}: {path or 'the document'}: {problem}")


def _shape(node: Node) -> str:
    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, ScalarNode):
        return f"the value {node.value!r}"
    return "a mapping"


def _describe(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return repr(value)


def parse_text(text: str | bytes) -> Workflow:
    """The workflow a YAML or JSON document defines, validated. Raises BadRequest (400) naming
    the line and the field of the first problem found."""
    if isinstance(text, bytes):
        if len(text) > MAX_TEXT_BYTES:
            raise BadRequest(f"a workflow definition holds at most {MAX_TEXT_BYTES} bytes")
        try:
            text = text.decode()
        except UnicodeDecodeError:
            raise BadRequest("a workflow definition is UTF-8 text") from None
    if not text.strip():
        raise BadRequest("the workflow definition is empty")
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            raise BadRequest(f"{where}malformed YAML: {exc.problem or exc.context}") from None
        except yaml.YAMLError as exc:
            raise BadRequest(f"malformed YAML: {exc}") from None
        if node is None:
            raise BadRequest("the workflow definition is empty")
        workflow = _workflow(loader, node)
    finally:
        loader.dispose()
    check_graph(workflow)
    return workflow


def _workflow(loader: yaml.SafeLoader, node: Node) -> Workflow:
    fields = _Fields(loader, node, "")
    fields.known(("name", "description", "timeout_s", "steps"))
    name_node = fields.fields.get("name", (node, node))[1]
    name = fields.value("name", str, required=True)
    if not re.fullmatch(NAME_PATTERN, name):
        raise _error(name_node, "name", "a workflow name is 1 to 63 lowercase letters, digits "
                     "or '-', starting and ending with a letter or a digit")
    timeout = fields.number("timeout_s", 0.001, 7 * 86400)
    description = fields.value("description", str) or ""
    steps_node = fields.node_of("steps", required=True)
    assert steps_node is not None
    seen: dict[str, int] = {}
    steps = _steps(loader, steps_node, "steps", seen)
    return Workflow(name, steps, float(timeout) if timeout is not None else None, description)


def _steps(loader: yaml.SafeLoader, node: Node, path: str, seen: dict[str, int]
           ) -> tuple[Step, ...]:
    if not isinstance(node, SequenceNode):
        raise _error(node, path, f"expected a list of steps, got {_shape(node)}")
    if not node.value:
        raise _error(node, path, "needs at least one step")
    return tuple(_step(loader, item, f"{path}[{i}]", seen) for i, item in enumerate(node.value))


def _step(loader: yaml.SafeLoader, node: Node, path: str, seen: dict[str, int]) -> Step:
    fields = _Fields(loader, node, path)
    fields.known(ANY_STEP)  # a misspelt "type" is named as unknown, not as "type" missing
    id_line = fields.line_of("id")
    step_id = fields.value("id", str, required=True)
    if not re.fullmatch(STEP_ID, step_id):
        raise BadRequest(f"line {id_line}: {path}.id: a step id is a letter or '_' then up to "
                         f"62 letters, digits, '_' or '-', got {step_id!r}")
    if step_id in seen:
        raise BadRequest(f"line {id_line}: {path}.id: step id {step_id!r} is already used at "
                         f"line {seen[step_id]}")
    seen[step_id] = id_line
    kind_line = fields.line_of("type")
    kind = fields.value("type", str, required=True)
    if kind not in KINDS:
        raise BadRequest(f"line {kind_line}: {path}.type: unknown step type {kind!r} (one of: "
                         f"{', '.join(KINDS)})")
    allowed = (*COMMON, *BY_KIND[kind])
    fields.known(allowed)
    fields.value("comment", str)
    extra: dict[str, Any] = {}
    if "next" in allowed:
        end_line = fields.line_of("end")
        extra["next"] = fields.value("next", str)
        extra["end"] = bool(fields.value("end", bool))
        if extra["next"] is not None and extra["end"]:
            raise BadRequest(f"line {end_line}: {path}.end: a step has either next or "
                             "end: true, not both")
    if "timeout_s" in allowed:
        timeout = fields.number("timeout_s", 0.001, 86400)
        extra["timeout_s"] = float(timeout) if timeout is not None else None
    if "catch" in allowed and fields.has("catch"):
        extra["catch"] = _catch(loader, fields.node_of("catch"), f"{path}.catch")
    if kind == "task":
        extra["deployment"] = _deployment(fields)
        extra["input"] = _template(fields, "input")
        if fields.has("retry"):
            extra["retry"] = _retry(loader, fields.node_of("retry"), f"{path}.retry")
    elif kind == "parallel":
        branches = fields.node_of("branches", required=True)
        assert branches is not None
        if not isinstance(branches, SequenceNode) or not branches.value:
            raise _error(branches, f"{path}.branches", "expected a list of branches, each a "
                         "list of steps")
        extra["branches"] = tuple(_steps(loader, b, f"{path}.branches[{i}]", seen)
                                  for i, b in enumerate(branches.value))
    elif kind == "map":
        extra["items"] = _reference(fields, "items", required=True)
        extra["concurrency"] = fields.number("concurrency", 1, 256, integer=True) or 8
        inner = fields.node_of("step", required=True)
        assert inner is not None
        extra["iterator"] = _step(loader, inner, f"{path}.step", seen)
    elif kind == "choice":
        extra["rules"] = _rules(loader, fields, path)
        extra["default"] = fields.value("default", str)
    elif kind == "succeed":
        extra["output"] = _template(fields, "output")
    else:
        extra["error"] = fields.value("error", str) or "workflow_failed"
        extra["cause"] = fields.value("cause", str) or ""
    return Step(step_id, kind, _line(node), **extra)


def _deployment(fields: _Fields) -> str:
    line = fields.line_of("deployment")
    name: str = fields.value("deployment", str, required=True)
    if not re.fullmatch(NAME_PATTERN, name):
        raise BadRequest(f"line {line}: {fields.at('deployment')}: {name!r} is not a "
                         "deployment name")
    return name


def _template(fields: _Fields, name: str) -> Any:
    node = fields.node_of(name)
    if node is None:
        return None
    value = fields.loader.construct_object(node, deep=True)
    for text in refs.references(value):
        try:
            refs.parse(text)
        except ValueError as exc:
            raise _error(node, fields.at(name), str(exc)) from None
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise _error(node, fields.at(name), "a template holds JSON values only (no dates, "
                     "no binary)") from None
    return value


def _reference(fields: _Fields, name: str, required: bool = False) -> str | None:
    line = fields.line_of(name)
    text = fields.value(name, str, required=required)
    if text is None:
        return None
    try:
        refs.parse(text)
    except ValueError as exc:
        raise BadRequest(f"line {line}: {fields.at(name)}: {exc}") from None
    return str(text)


def _retry(loader: yaml.SafeLoader, node: Node | None, path: str) -> Retry:
    assert node is not None
    fields = _Fields(loader, node, path)
    fields.known(("max_attempts", "base_s", "cap_s"))
    attempts = fields.number("max_attempts", 1, 20, integer=True)
    base = fields.number("base_s", 0, 3600)
    cap = fields.number("cap_s", 0, 3600)
    default = Retry()
    return Retry(attempts if attempts is not None else 3,
                 float(base) if base is not None else default.base_s,
                 float(cap) if cap is not None else default.cap_s)


def _catch(loader: yaml.SafeLoader, node: Node | None, path: str) -> Catch:
    assert node is not None
    fields = _Fields(loader, node, path)
    fields.known(("next", "errors"))
    line = fields.line_of("next")
    target = fields.value("next", str, required=True)
    errors = fields.value("errors", list) or []
    if not all(isinstance(e, str) for e in errors):
        raise _error(node, f"{path}.errors", "expected a list of error types (strings)")
    return Catch(target, tuple(errors), line)


def _rules(loader: yaml.SafeLoader, fields: _Fields, path: str) -> tuple[Rule, ...]:
    node = fields.node_of("choices", required=True)
    assert node is not None
    if not isinstance(node, SequenceNode) or not node.value:
        raise _error(node, f"{path}.choices", "expected a list of conditions")
    rules = []
    for i, item in enumerate(node.value):
        rule = _Fields(loader, item, f"{path}.choices[{i}]")
        rule.known(("variable", "next", *OPERATORS))
        variable = _reference(rule, "variable", required=True)
        given = [op for op in OPERATORS if rule.has(op)]
        if len(given) != 1:
            raise _error(item, rule.path, "needs exactly one operator of: " + ", ".join(OPERATORS))
        operator = given[0]
        value_node = rule.node_of(operator)
        assert value_node is not None and variable is not None
        value = loader.construct_object(value_node, deep=True)
        if operator == "exists" and not isinstance(value, bool):
            raise _error(value_node, rule.at(operator), "expected true or false")
        if operator == "in" and not isinstance(value, list):
            raise _error(value_node, rule.at(operator), "expected a list")
        if operator in ("gt", "gte", "lt", "lte") and (
                isinstance(value, bool) or not isinstance(value, (int, float, str))):
            raise _error(value_node, rule.at(operator), "expected a number or a string")
        target = rule.value("next", str, required=True)
        rules.append(Rule(variable, operator, value, target, _line(item)))
    return tuple(rules)
