"""The fold of a job's events, pure: state and metric curves."""

from __future__ import annotations

from stratus.jobs.events import JobEvent
from stratus.jobs.fold import curves, fold


def _event(seq: int, type_: str, **data: object) -> JobEvent:
    return JobEvent(job_id="job-1", seq=seq, type=type_, at=float(seq), data=dict(data))


def test_a_failed_job_keeps_its_error_and_the_metrics_it_reached() -> None:
    events = [_event(1, "JobSubmitted", spec={"experiment": "e", "params": {"lr": 0.1}}),
              _event(2, "JobStarted", attempt=1),
              _event(3, "EpochCompleted", epoch=1, loss=0.7, metrics={"acc": 0.5}),
              _event(4, "JobFailed", error="Traceback ...", reason="out_of_memory")]
    state = fold("ns", "job-1", events)
    assert state is not None
    assert (state.status, state.reason, state.experiment) == ("failed", "out_of_memory", "e")
    assert state.metrics == {"loss": 0.7, "acc": 0.5}
    assert (state.started_at, state.ended_at, state.params) == (2.0, 4.0, {"lr": 0.1})


def test_a_metric_without_a_step_is_plotted_in_log_order_and_a_repeated_step_keeps_the_last() -> None:
    events = [_event(1, "JobSubmitted", spec={}),
              _event(2, "MetricLogged", name="x", value=1.0),
              _event(3, "MetricLogged", name="x", value=2.0),
              _event(4, "MetricLogged", name="y", value=5.0, step=1),
              _event(5, "MetricLogged", name="y", value=6.0, step=1)]
    assert curves(events) == {"x": [(2, 1.0), (3, 2.0)], "y": [(1, 6.0)]}
