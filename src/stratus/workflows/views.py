"""What the API shows of workflows and executions: a definition's outline (for the graph) and an
execution with its step history, the stored steps merged with the ones in flight."""

from __future__ import annotations

from typing import Any

from stratus.workflows.history import loads
from stratus.workflows.language import Step, Workflow, walk
from stratus.workflows.validate import successor


def outline(steps: tuple[Step, ...]) -> list[dict[str, Any]]:
    """Each step's id, kind and links: enough to draw the workflow as a graph."""
    drawn = []
    for index, step in enumerate(steps):
        node: dict[str, Any] = {"id": step.id, "type": step.kind, "line": step.line}
        if step.kind in ("task", "parallel", "map"):
            node["next"] = successor(steps, index)
        if step.deployment:
            node["deployment"] = step.deployment
        if step.catch is not None:
            node["catch"] = step.catch.next
        if step.kind == "choice":
            node["choices"] = [rule.next for rule in step.rules]
            node["default"] = step.default
        if step.branches:
            node["branches"] = [outline(branch) for branch in step.branches]
        if step.iterator is not None:
            node["step"] = outline((step.iterator,))[0]
            node["concurrency"] = step.concurrency
        drawn.append(node)
    return drawn


def workflow_view(row: dict[str, Any], workflow: Workflow | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {"name": row["name"], "created_at": row["created_at"],
                            "updated_at": row["updated_at"]}
    if workflow is not None:
        tasks = sorted({step.deployment for step in walk(workflow.steps) if step.deployment})
        view.update(description=workflow.description, timeout_s=workflow.timeout_s,
                    deployments=tasks, steps=outline(workflow.steps),
                    definition=row["definition"])
    return view


def step_view(row: dict[str, Any]) -> dict[str, Any]:
    started, finished = row["started_at"], row.get("finished_at")
    view = {"key": row["key"], "step": row["step"], "type": row["kind"], "state": row["state"],
            "attempts": row["attempts"], "started_at": started, "finished_at": finished,
            "duration_ms": round((finished - started) * 1000, 3) if finished else None}
    if "input" in row:
        view["input"] = loads(row["input"]) if isinstance(row["input"], str) else row["input"]
    for name in ("output", "error"):
        if row.get(name) is not None:
            view[name] = loads(row[name])
    if row.get("chosen"):
        view["chosen"] = row["chosen"]
    return view


def summary_view(row: dict[str, Any]) -> dict[str, Any]:
    finished = row.get("finished_at")
    view = {"id": row["id"], "workflow": row["workflow"], "status": row["status"],
            "created_at": row["created_at"], "finished_at": finished,
            "duration_s": round(finished - row["created_at"], 6) if finished else None}
    if row.get("error") is not None:
        view["error"] = loads(row["error"])
    return view


def execution_view(row: dict[str, Any], steps: list[dict[str, Any]],
                   running: list[dict[str, Any]], workflow: Workflow | None) -> dict[str, Any]:
    view = summary_view(row)
    view["input"] = loads(row["input"])
    view["output"] = loads(row["output"])
    view["error"] = loads(row["error"])
    history = [step_view(step) for step in steps]
    seen = {step["key"] for step in history}
    history += [step_view(step) for step in running if step["key"] not in seen]
    history.sort(key=lambda step: (step["started_at"], step["key"]))
    view["steps"] = history
    if workflow is not None:
        view["graph"] = outline(workflow.steps)
    return view
