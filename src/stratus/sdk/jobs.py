"""What a job's code receives: ``train(ctx: JobContext)``. The context records parameters,
metrics and epochs as events, stores checkpoints and models through the server, and opens
the datasets the job declared."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from stratus.sdk.context import declared_model, model_summary
from stratus.sdk.saving import checkpoint_bytes, load_checkpoint_bytes, serialize

Scalar = str | int | float | bool | None
MAX_METRIC_NAME = 63  # as the event log stores them
MAX_PARAM_NAME = 128


class JobChannel(Protocol):
    """The job's line to the server (runtime/job.py): events go out in order; calls wait."""

    def emit(self, kind: str, data: dict[str, Any]) -> None: ...

    def call(self, op: str, payload: dict[str, Any]) -> Any: ...


def _name(name: object, what: str, longest: int = MAX_METRIC_NAME) -> str:
    if not isinstance(name, str) or not name or len(name) > longest:
        raise ValueError(f"a {what} name is a non-empty string of at most {longest} "
                         f"characters, not {name!r}")
    return name


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        item = getattr(value, "item", None)  # a numpy or torch scalar
        if not callable(item):
            raise TypeError(f"{what} must be a number, not {type(value).__name__}")
        value = item()
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{what} must be a number, not {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} is {number}: only finite numbers are recorded")
    return number


def _step(step: object, what: str) -> int | None:
    if step is None:
        return None
    if isinstance(step, bool) or not isinstance(step, int):
        raise TypeError(f"{what} must be an int, not {type(step).__name__}")
    return step


def check_scalars(params: Mapping[str, object], what: str) -> dict[str, Scalar]:
    """Parameters are flat: each value a string, number, bool or None."""
    checked: dict[str, Scalar] = {}
    for key, value in params.items():
        _name(key, what, MAX_PARAM_NAME)
        if value is not None and not isinstance(value, str | int | float | bool):
            raise TypeError(f"{what} {key!r} must be a string, number, bool or None, not "
                            f"{type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{what} {key!r} is {value}: only finite numbers are recorded")
        checked[key] = value
    return checked


def total_epochs(params: Mapping[str, Any]) -> int | None:
    epochs = params.get("epochs")
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0 \
        else None


class JobContext:
    """Given to ``train(ctx)``, once, in the job's worker process."""

    def __init__(self, *, job_id: str, namespace: str, params: Mapping[str, Any],
                 datasets: Mapping[str, Mapping[str, Any]], channel: JobChannel,
                 logger: logging.Logger, rank: int = 0, world_size: int = 1, attempt: int = 1,
                 memory_mb: int | None = None,
                 models: Sequence[Mapping[str, Any]] = ()) -> None:
        self.job_id = job_id
        self.namespace = namespace
        self.params: dict[str, Any] = dict(params)
        self.logger = logger
        self.rank = rank
        self.world_size = world_size
        self.attempt = attempt
        self.memory_mb = memory_mb
        # From params["epochs"]: the CLI's progress bar counts epochs against it.
        self.total_epochs = total_epochs(self.params)
        self._datasets = {ref: dict(layout) for ref, layout in datasets.items()}
        self._channel = channel
        self._last_epoch: int | None = None
        self._models = [dict(model) for model in models]
        # The model object saved last and what was recorded of it: the worker evaluates it
        # when the job's model is gated.
        self.saved: tuple[Any, dict[str, Any]] | None = None

    # -- tracking -------------------------------------------------------------------------
    def log_params(self, **params: Scalar) -> None:
        """Record parameters of this run (``runs compare`` shows them beside ctx.params)."""
        if params:
            self._channel.emit("ParamsLogged", {"params": check_scalars(params, "parameter")})

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        """One value of a metric, at ``step`` if given; the last value is the run's final one."""
        self._channel.emit("MetricLogged", {"name": _name(name, "metric"),
                                            "value": _number(value, f"metric {name!r}"),
                                            "step": _step(step, "step")})

    def epoch(self, epoch: int, loss: float, **metrics: float) -> None:
        """An epoch ended: its loss and any other metrics (they drive the progress bar)."""
        checked = {_name(key, "metric"): _number(value, f"metric {key!r}")
                   for key, value in metrics.items()}
        number = _step(epoch, "epoch")
        self._channel.emit("EpochCompleted", {"epoch": number,
                                              "loss": _number(loss, "loss"), "metrics": checked})
        self._last_epoch = number

    # -- checkpoints and models -------------------------------------------------------------
    def save_checkpoint(self, state: Any, step: int | None = None) -> str:
        """Store ``state`` (what ``torch.save`` writes) encrypted in the artifact store; the
        step defaults to the last epoch reported. Returns the checkpoint's digest."""
        step = _step(step, "step")
        if step is None:
            step = self._last_epoch if self._last_epoch is not None else 0
        answer = self._channel.call("checkpoint", {"step": step, "data": checkpoint_bytes(state)})
        return str(answer["digest"])

    def load_checkpoint(self) -> Any | None:
        """The latest checkpoint this job saved (in this attempt or an earlier one), or None."""
        answer = self._channel.call("load_checkpoint", {})
        if answer is None:
            return None
        return load_checkpoint_bytes(answer["data"])

    def save_model(self, model: Any, *, signature: dict[str, Any] | None = None,
                   task: str | None = None,
                   preprocessing: dict[str, Any] | None = None,
                   init_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
        """Store a trained model (a torch ``nn.Module`` or a scikit-learn estimator) as the
        job's output, with its input signature (``{"features": [...], "target": ...}``, and
        ``"classes"`` for a torch classifier's outputs), task (``classification`` or
        ``regression``) and preprocessing statistics (the training split's, from
        ``fit_statistics``). A torch module is built again from its class and
        ``init_kwargs`` (JSON) to evaluate or load it later. Returns what was recorded."""
        for value, what in ((signature, "signature"), (preprocessing, "preprocessing")):
            if value is not None and not isinstance(value, dict):
                raise TypeError(f"{what} must be a dict, not {type(value).__name__}")
        if task is not None and not isinstance(task, str):
            raise TypeError(f"task must be a string, not {type(task).__name__}")
        if init_kwargs is not None and not isinstance(init_kwargs, dict):
            raise TypeError(f"init_kwargs must be a dict, not {type(init_kwargs).__name__}")
        saved = serialize(model)
        meta = {**saved.meta, "init_kwargs": init_kwargs or {}}
        recorded: dict[str, Any] = self._channel.call("model", {
            "files": saved.files, "format": saved.format, "framework": saved.framework,
            "signature": signature, "task": task, "preprocessing": preprocessing,
            "meta": meta})
        self.saved = (model, recorded)
        return recorded

    def log_evaluation(self, document: dict[str, Any]) -> None:
        """Record a model's evaluation (``{"model", "dataset", "split", "task", "samples",
        "metrics", "report"}``): what the built-in evaluation records, and a gate reads."""
        self._channel.emit("EvaluationCompleted", document)

    def load_model(self, name: str) -> Any:
        """A registry version the job declared (``--model name@version``): a scikit-learn
        estimator, or a torch module a job saved, built again with its weights."""
        from stratus.sdk.saving import rebuild

        return rebuild(declared_model(self._models, name, "job"))

    def model_info(self, name: str) -> dict[str, Any]:
        """A declared model's version, format and metadata (signature, preprocessing...)."""
        return model_summary(declared_model(self._models, name, "job"))

    # -- data -------------------------------------------------------------------------------
    def dataset(self, ref: str, split: str | None = None) -> Any:
        """A dataset the job declared (``--dataset``), or one split of it: a
        ``DatasetSplit`` with ``to_pandas()``, ``to_arrow()`` and ``to_torch(...)``."""
        layout = self._layout(ref)
        from stratus.datasets.reader import open_split

        return open_split(layout, split)

    def _layout(self, ref: str) -> dict[str, Any]:
        if ref in self._datasets:
            return self._datasets[ref]
        for layout in self._datasets.values():
            if ref in (layout.get("ref"), f"{layout.get('name')}@{layout.get('version')}",
                       layout.get("name")):
                return layout
        declared = ", ".join(sorted(self._datasets)) or "none"
        raise LookupError(f"dataset {ref!r} was not declared by this job (declared: "
                          f"{declared}); submit it with --dataset {ref}")
