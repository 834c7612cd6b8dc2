"""What a handler sees of its environment: ``ctx`` at init and ``context`` per request."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

# A proxy until the replica installs its provider; outside a replica its spans record nothing.
_tracer = trace.get_tracer("stratus.handler")

# Where the request being handled sends ``progress`` reports: set by the replica around each
# call whose caller asked for progress (async invocations), None otherwise.
ProgressReporter = Callable[[float, "str | None"], None]
current_progress: ContextVar[ProgressReporter | None] = ContextVar("stratus_progress",
                                                                   default=None)


def report_progress(fraction: float, message: str | None = None) -> None:
    """Report how far the current request has come (0..1) and what it is doing. Shown in
    ``GET /api/invocations/{id}`` for an async invocation; a no-op for a sync call."""
    if not isinstance(fraction, int | float) or isinstance(fraction, bool):
        raise TypeError(f"progress takes a number between 0 and 1, not {fraction!r}")
    reporter = current_progress.get()
    if reporter is not None:
        reporter(min(1.0, max(0.0, float(fraction))), None if message is None else str(message))


FormatException = Callable[[Any], str]  # as logging.Formatter.formatException


class _JsonLineFormatter(logging.Formatter):
    def __init__(self, fields: Mapping[str, Any],
                 format_exception: FormatException | None = None) -> None:
        super().__init__()
        self._fields = dict(fields)
        self._format_exception = format_exception

    def formatException(self, ei: Any) -> str:
        if self._format_exception is not None:
            return self._format_exception(ei)
        return super().formatException(ei)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "message": record.getMessage(),
            **self._fields,
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def json_logger(name: str, fields: Mapping[str, Any],
                format_exception: FormatException | None = None) -> logging.Logger:
    """A logger writing JSON lines, tagged with ``fields``, to stderr (which the process's
    output capture appends to its log). ``format_exception`` formats a record's traceback
    (the runtime's trims it to the user's code)."""
    logger = logging.getLogger(name)
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLineFormatter(fields, format_exception))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def replica_logger(deployment: str, revision: int, replica_id: str,
                   format_exception: FormatException | None = None) -> logging.Logger:
    """A logger writing JSON lines to the replica's stderr, which goes to the deployment log."""
    return json_logger(f"stratus.replica.{deployment}",
                       {"deployment": deployment, "revision": revision, "replica": replica_id},
                       format_exception)


def declared_model(models: Sequence[Mapping[str, Any]], name: str, owner: str,
                   version: str | None = None, stage: str | None = None) -> dict[str, Any]:
    """One of the models a deployment or a job (``owner``) declared, laid out to load."""
    for model in models:
        if model["name"] != name:
            continue
        if version is not None and model["version"] != version:
            raise LookupError(f"this {owner} resolves {model['ref']} to version "
                              f"{model['version']}, not {version}")
        if stage is not None and model.get("stage") != stage:
            raise LookupError(f"this {owner} declares {model['ref']}, not {name}@{stage}")
        return dict(model)
    declared = ", ".join(m["ref"] for m in models) or "none"
    verb = "deploy" if owner == "deployment" else "submit it"
    raise LookupError(f"model {name!r} is not declared by this {owner} (declared: "
                      f"{declared}); {verb} with --model {name}@<version or stage>")


def model_summary(model: Mapping[str, Any]) -> dict[str, Any]:
    """What ``model_info`` shows of a declared model."""
    return {key: model.get(key) for key in ("name", "version", "stage", "format", "meta")}


class Context:
    """Given to ``__init__(self, ctx)`` once per replica."""

    def __init__(
        self,
        *,
        deployment: str,
        namespace: str,
        revision: int,
        replica_id: str,
        config: Mapping[str, Any],
        env: Mapping[str, str],
        memory_mb: int | None,
        timeout_s: float,
        logger: logging.Logger,
        threads: int = 1,
        models: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self.deployment = deployment
        self.namespace = namespace
        self.revision = revision
        self.replica_id = replica_id
        self.config: dict[str, Any] = dict(config)
        self.env: dict[str, str] = dict(env)
        self.memory_mb = memory_mb
        self.timeout_s = timeout_s
        self.logger = logger
        self.threads = threads
        self._models = [dict(model) for model in models]

    def span(self, name: str, attributes: Mapping[str, AttributeValue] | None = None
             ) -> AbstractContextManager[trace.Span]:
        """A child span of the request being handled: ``with ctx.span("tokenize"): ...``.
        It ends with the block; an exception marks it failed (without its traceback)."""
        return _tracer.start_as_current_span(name, attributes=attributes, record_exception=False)

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report the progress of the request this replica is handling now (see
        ``report_progress``): call it from ``__call__``."""
        report_progress(fraction, message)

    def _model(self, name: str, version: str | None, stage: str | None) -> dict[str, Any]:
        return declared_model(self._models, name, "deployment", version, stage)

    def load_model(self, name: str, version: str | None = None, stage: str | None = None,
                   module: Any = None) -> Any:
        """A declared model, ready to use: for safetensors a dict of name to tensor (or, given
        ``module``, that torch module with the weights), memory-mapped and shared with the
        other replicas; a transformers model; an onnxruntime session; a trusted pickle."""
        from stratus.models.loading import load

        return load(self._model(name, version, stage), module=module, threads=self.threads)

    def model_path(self, name: str) -> str:
        """The directory holding a declared model's files (tokenizers, configs, ...)."""
        return str(self._model(name, None, None)["dir"])

    def model_info(self, name: str) -> dict[str, Any]:
        return model_summary(self._model(name, None, None))


class RequestContext:
    """Given to a Lambda-style ``handler(event, context)`` with each request."""

    def __init__(self, replica: Context, request_id: str, deadline: float) -> None:
        self.replica = replica
        self.request_id = request_id
        self.aws_request_id = request_id  # the name Lambda handlers already use
        self.function_name = replica.deployment
        self.function_version = str(replica.revision)
        self.memory_limit_in_mb = replica.memory_mb
        self.config = replica.config
        self.env = replica.env
        self.logger = replica.logger
        self._deadline = deadline

    def span(self, name: str, attributes: Mapping[str, AttributeValue] | None = None
             ) -> AbstractContextManager[trace.Span]:
        """As ``Context.span``: a child span of this request's handler span."""
        return self.replica.span(name, attributes)

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report how far this request has come: see ``report_progress``."""
        report_progress(fraction, message)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))
