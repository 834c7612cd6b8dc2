"""The checks of a parsed workflow as a graph: links stay in their scope and name known steps,
references name known steps, and no loop can run forever on its own. Pure.

The loop rule: following a step's unconditional successor (its ``next``, or the step after it)
must never come back to it without passing a ``choice``; and from every step some path (through
successors, catches and choices) must reach an end. A loop through a choice is allowed, since
the choice can leave it."""

from __future__ import annotations

from stratus.errors import BadRequest
from stratus.workflows import refs
from stratus.workflows.language import Step, Workflow, walk


def successor(steps: tuple[Step, ...], index: int) -> str | None:
    """Where a task, parallel or map goes when it succeeds: ``next``, else the step after it in
    the list; None: the scope ends."""
    step = steps[index]
    if step.end:
        return None
    if step.next is not None:
        return step.next
    return steps[index + 1].id if index + 1 < len(steps) else None


def scopes(steps: tuple[Step, ...]) -> list[tuple[Step, ...]]:
    """The workflow's scopes: the top-level list, each branch of a parallel, each map's step."""
    found = [steps]
    for step in steps:
        for branch in step.branches:
            found.extend(scopes(branch))
        if step.iterator is not None:
            found.extend(scopes((step.iterator,)))
    return found


def check_graph(workflow: Workflow) -> None:
    every = {step.id: step for step in walk(workflow.steps)}
    for scope in scopes(workflow.steps):
        _check_links(scope, every)
        _check_loops(scope)
    for step in every.values():
        _check_references(step, every)


def _links(step: Step) -> list[tuple[str, str, int]]:
    """(field, target, line) of each link a step makes to another step of its scope."""
    links: list[tuple[str, str, int]] = []
    if step.next is not None:
        links.append(("next", step.next, step.line))
    if step.catch is not None:
        links.append(("catch.next", step.catch.next, step.catch.line or step.line))
    for i, rule in enumerate(step.rules):
        links.append((f"choices[{i}].next", rule.next, rule.line or step.line))
    if step.default is not None:
        links.append(("default", step.default, step.line))
    return links


def _check_links(steps: tuple[Step, ...], every: dict[str, Step]) -> None:
    here = {step.id for step in steps}
    for step in steps:
        for field, target, line in _links(step):
            if target in here:
                continue
            if target in every:
                raise BadRequest(f"line {line}: step {step.id!r}: {field} names step {target!r}, "
                                 "which is in another scope (a parallel's branch or a map's "
                                 "step): a link stays in its own list of steps")
            raise BadRequest(f"line {line}: step {step.id!r}: {field} names unknown step "
                             f"{target!r}")


def _check_loops(steps: tuple[Step, ...]) -> None:
    by_id = {step.id: i for i, step in enumerate(steps)}
    # Unconditional successors only: a choice is where a loop may leave, so it cuts the walk.
    for start in range(len(steps)):
        path: list[str] = []
        index: int | None = start
        while index is not None:
            step = steps[index]
            if step.kind in ("choice", "succeed", "fail"):
                break
            if step.id in path:
                loop = [*path[path.index(step.id):], step.id]
                raise BadRequest(f"line {step.line}: step {step.id!r}: next makes a loop with no "
                                 f"choice to leave it: {' -> '.join(loop)}")
            path.append(step.id)
            target = successor(steps, index)
            index = by_id[target] if target is not None else None
    _check_exits(steps)


def _check_exits(steps: tuple[Step, ...]) -> None:
    """Every step has a way out: reverse reachability from the steps that can end the scope."""
    edges: dict[str, set[str]] = {}
    finishing: set[str] = set()
    for index, step in enumerate(steps):
        targets = {link[1] for link in _links(step)}
        if step.kind == "choice":
            if step.default is None:
                finishing.add(step.id)  # no rule holds: the scope fails, which ends it
        elif step.terminal:
            finishing.add(step.id)
        else:
            after = successor(steps, index)
            if after is None:
                finishing.add(step.id)
            else:
                targets.add(after)
        edges[step.id] = targets
    can_finish = set(finishing)
    changed = True
    while changed:
        changed = False
        for step_id, targets in edges.items():
            if step_id not in can_finish and targets & can_finish:
                can_finish.add(step_id)
                changed = True
    for step in steps:
        if step.id not in can_finish:
            raise BadRequest(f"line {step.line}: step {step.id!r}: every path from this step "
                             "loops back without end; give one of its choices a way out")


def _check_references(step: Step, every: dict[str, Step]) -> None:
    texts: list[str] = [*refs.references(step.input), *refs.references(step.output)]
    texts += [rule.variable for rule in step.rules]
    if step.items is not None:
        texts.append(step.items)
    for text in texts:
        path = refs.parse(text)
        if path[0] == "steps" and path[1] not in every:
            raise BadRequest(f"line {step.line}: step {step.id!r}: reference {text!r} names "
                             f"unknown step {path[1]!r}")
        if path[0] in ("item", "index") and not _inside_map(step, every):
            raise BadRequest(f"line {step.line}: step {step.id!r}: reference {text!r} is only "
                             "defined inside a map's step")


def _inside_map(step: Step, every: dict[str, Step]) -> bool:
    owners = {s.iterator.id: s for s in every.values() if s.iterator is not None}
    parents: dict[str, Step] = {}
    for candidate in every.values():
        for branch in candidate.branches:
            for inner in branch:
                parents[inner.id] = candidate
    current: Step | None = step
    while current is not None:
        if current.id in owners:
            return True
        current = parents.get(current.id)
    return False
