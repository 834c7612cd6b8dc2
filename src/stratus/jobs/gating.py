"""What a job's ``register`` asks for, checked when it is submitted (so a bad gate is a 400
before anything runs), and the evaluation its worker makes of the model it saves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stratus.errors import BadRequest
from stratus.evaluation.gate import parse_gates
from stratus.jobs.request import JobRequest
from stratus.models.registry import check_name, check_stage, parse_version

CheckSplit = Callable[[dict[str, Any], str], None]  # NotFound (404) for an unknown split


def evaluation_target(request: JobRequest, layouts: dict[str, dict[str, Any]],
                      check_split: CheckSplit) -> dict[str, Any] | None:
    """``{"dataset", "split"}`` the saved model is scored on, or None (nothing registered, or
    no dataset to score on and no gate that needs one)."""
    registration = request.registration
    if registration is None:
        return None
    check_name(registration.name)
    check_stage(registration.stage)
    if registration.version is not None:
        parse_version(registration.version)
    if registration.gate_vs is not None:
        check_stage(registration.gate_vs)
    gates = parse_gates(registration.gate)  # 400: where it does not parse, or no such metric
    gated = bool(gates) or registration.gate_vs is not None
    if registration.dataset is None:
        if not layouts:
            if gated:
                raise BadRequest("a gated registration is judged on an evaluation: give the job "
                                 "a dataset (--dataset) with the split to evaluate on")
            return None
        ref = next(iter(layouts))
    elif registration.dataset in layouts:
        ref = registration.dataset
    else:
        raise BadRequest(f"register.dataset {registration.dataset!r} is not one of the job's "
                         f"datasets ({', '.join(layouts) or 'none'})")
    layout = layouts[ref]
    if layout.get("split") is None and not gated:
        return None  # no split to hold out: nothing to score the model on
    check_split(layout, registration.split)
    return {"dataset": ref, "split": registration.split}
