"""Evaluations inside a job worker: the model a gated job just saved, and a registry version
(the built-in evaluation job), scored on a dataset's split with the training statistics."""

from __future__ import annotations

from typing import Any

from stratus.datasets.stats import apply_statistics
from stratus.evaluation.metrics import TASKS, scalars
from stratus.evaluation.predict import evaluate_model
from stratus.sdk.jobs import JobContext


def _score(ctx: JobContext, model: Any, meta: dict[str, Any], *, model_ref: str,
           dataset: str, split: str) -> dict[str, Any]:
    task = meta.get("task")
    if task not in TASKS:
        raise ValueError(f"{model_ref} cannot be evaluated: its task is {task!r}, not one of "
                         f"{', '.join(TASKS)} (save_model(..., task=...))")
    signature = meta.get("signature") or {}
    target = signature.get("target")
    if not isinstance(target, str):
        raise ValueError(f"{model_ref} cannot be evaluated: its signature names no target "
                         "column (save_model(..., signature={'features': [...], "
                         "'target': ...}))")
    stats = meta.get("preprocessing")
    rows = ctx.dataset(dataset, split)
    report = evaluate_model(
        model, rows.to_pandas(), task=task, target=target, features=signature.get("features"),
        classes=signature.get("classes"),
        # The training split's statistics, saved with the model: never the evaluated rows'.
        preprocess=(lambda frame: apply_statistics(frame, stats)) if stats else None)
    document = {"model": model_ref, "dataset": str(rows.layout["ref"]), "split": split, "task": task,
                "samples": rows.num_rows, "metrics": scalars(report), "report": report}
    ctx.log_evaluation(document)
    return document


def evaluate_saved(ctx: JobContext, dataset: str, split: str) -> dict[str, Any]:
    """Score the model the job saved last, as its gate needs."""
    if ctx.saved is None:
        raise ValueError("the job registers a model but saved none: call ctx.save_model(model, "
                         "task=..., signature=...)")
    model, recorded = ctx.saved
    return _score(ctx, model, recorded, model_ref=f"job {ctx.job_id}", dataset=dataset,
                  split=split)


def evaluate_job(ctx: JobContext) -> None:
    """The built-in evaluation job: params ``model`` (a declared name), ``dataset``, ``split``."""
    name, dataset, split = (str(ctx.params[key]) for key in ("model", "dataset", "split"))
    info = ctx.model_info(name)
    _score(ctx, ctx.load_model(name), info["meta"] or {},
           model_ref=f"{info['name']}@{info['version']}", dataset=dataset, split=split)
