"""Imports a user's code from its bundle and tells what kind of handler it is.

Runs in the revision zygote, so a deploy fails fast on an import error and every
replica forked afterwards starts with the module already imported.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from typing import Any

from stratus.errors import DeployError
from stratus.sdk.context import Context
from stratus.sdk.deployment import options_of
from stratus.sdk.options import DeploymentOptions


class HandlerKind(enum.StrEnum):
    CLASS = "class"  # __init__(self, ctx) once per replica, __call__(self, request) per request
    FUNCTION = "function"  # def handler(request)
    LAMBDA = "lambda"  # def handler(event, context) -> {"statusCode": ..., "body": ...}
    JOB = "job"  # def train(ctx): run once in a job worker, with a JobContext


@dataclass(frozen=True)
class LoadedHandler:
    target: Any
    kind: HandlerKind
    is_async: bool
    options: DeploymentOptions
    bundle_dir: str = ""  # where the code was imported from: its tracebacks are cut to it

    def describe(self) -> dict[str, Any]:
        """What the server records about the code, sent back over the wire."""
        return {"kind": self.kind.value, "is_async": self.is_async, "options": self.options.to_dict()}


def split_entrypoint(entrypoint: str) -> tuple[str, str]:
    """``dir/file.py:Object`` or ``package.module:Object`` -> (module name, attribute)."""
    module_part, sep, attribute = entrypoint.rpartition(":")
    if not sep or not module_part or not attribute.isidentifier():
        raise DeployError(f"entrypoint {entrypoint!r} must look like 'file.py:Object'")
    if module_part.endswith(".py"):
        module_part = module_part[:-3].replace("\\", "/").strip("/").replace("/", ".")
    if not all(part.isidentifier() for part in module_part.split(".")):
        raise DeployError(f"entrypoint {entrypoint!r} does not name an importable module")
    return module_part, attribute


def _positional_arity(function: Any) -> int:
    parameters = inspect.signature(function).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in parameters if p.kind in kinds)


def _runs_on_loop(function: Any) -> bool:
    """Coroutines and async generators run on the replica's event loop, not its threads."""
    return inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)


def _classify(target: Any, entrypoint: str) -> tuple[HandlerKind, bool]:
    if inspect.isclass(target):
        call = getattr(target, "__call__", None)  # noqa: B004 - the class attribute, not callable()
        if call is None or call is type.__call__ or "__call__" not in dir(target):
            raise DeployError(f"{entrypoint}: class has no __call__(self, request) method")
        if _positional_arity(call) != 2:
            raise DeployError(f"{entrypoint}: __call__ must take exactly (self, request)")
        init_arity = _positional_arity(target.__init__)
        if init_arity not in (1, 2):
            raise DeployError(f"{entrypoint}: __init__ must take (self) or (self, ctx)")
        return HandlerKind.CLASS, _runs_on_loop(call)
    if inspect.isfunction(target) or inspect.ismethod(target):
        arity = _positional_arity(target)
        if arity == 2:
            return HandlerKind.LAMBDA, _runs_on_loop(target)
        if arity == 1:
            return HandlerKind.FUNCTION, _runs_on_loop(target)
        raise DeployError(
            f"{entrypoint}: a function handler takes (request) or (event, context), not {arity} "
            "arguments"
        )
    raise DeployError(f"{entrypoint}: {type(target).__name__} is neither a class nor a function")


def _classify_job(target: Any, entrypoint: str) -> tuple[HandlerKind, bool]:
    if not (inspect.isfunction(target) or inspect.ismethod(target)):
        raise DeployError(f"{entrypoint}: a job is a function train(ctx), not a "
                          f"{type(target).__name__}")
    if _runs_on_loop(target):
        raise DeployError(f"{entrypoint}: a job function is a plain def, not async")
    if _positional_arity(target) != 1:
        raise DeployError(f"{entrypoint}: a job function takes exactly one argument (ctx), "
                          f"not {_positional_arity(target)}")
    return HandlerKind.JOB, False


def load_handler(bundle_dir: str, entrypoint: str, job: bool = False) -> LoadedHandler:
    """Import the entrypoint's module from the bundle and validate the handler object (with
    ``job``, a job function taking one JobContext)."""
    module_name, attribute = split_entrypoint(entrypoint)
    if bundle_dir not in sys.path:
        sys.path.insert(0, bundle_dir)
    previous_cwd = os.getcwd()
    os.chdir(bundle_dir)  # relative paths in module-level code resolve inside the bundle
    try:
        module = importlib.import_module(module_name)
    except DeployError:
        raise
    except BaseException as exc:
        raise DeployError(f"importing {module_name} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        os.chdir(previous_cwd)
    try:
        target = getattr(module, attribute)
    except AttributeError:
        raise DeployError(f"module {module_name} has no attribute {attribute!r}") from None
    kind, is_async = _classify_job(target, entrypoint) if job else _classify(target, entrypoint)
    return LoadedHandler(target=target, kind=kind, is_async=is_async, options=options_of(target),
                         bundle_dir=bundle_dir)


def instantiate(loaded: LoadedHandler, ctx: Context) -> Any:
    """Run the user's init once per replica and return the callable that serves requests."""
    if loaded.kind is not HandlerKind.CLASS:
        return loaded.target
    if _positional_arity(loaded.target.__init__) == 2:
        return loaded.target(ctx)
    return loaded.target()
