"""How a job's model becomes the files of a registry version: a torch ``nn.Module`` as
safetensors (its class path recorded, so it can be built again), a scikit-learn estimator as
the registry's ``pickle`` format, trusted because the platform itself wrote it."""

from __future__ import annotations

import io
import pickle
import sys
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SavedModel:
    format: str
    framework: str
    files: dict[str, bytes]
    meta: dict[str, Any] = field(default_factory=dict)


def class_path(obj: object) -> str:
    """``module:QualName`` of the object's class, as an entrypoint names an object."""
    cls = type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


def _torch_module(model: object) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def _sklearn_estimator(model: object) -> bool:
    base = sys.modules.get("sklearn.base")
    return base is not None and isinstance(model, base.BaseEstimator)


def _version(module: str) -> str | None:
    version = getattr(sys.modules.get(module), "__version__", None)
    return str(version) if version else None


def serialize(model: object) -> SavedModel:
    """The files and metadata of ``model``; TypeError for anything else."""
    if _torch_module(model):
        from safetensors.torch import save

        # Cloned: tied weights share storage, which safetensors refuses to write twice.
        state = {name: tensor.detach().cpu().contiguous().clone()
                 for name, tensor in model.state_dict().items()}  # type: ignore[attr-defined]
        if not state:
            raise ValueError("the torch module has no parameters or buffers to save")
        return SavedModel("safetensors", "torch", {"model.safetensors": save(state)},
                          {"class_path": class_path(model), "torch_version": _version("torch"),
                           "tensors": len(state)})
    if _sklearn_estimator(model):
        buffer = io.BytesIO()
        pickle.dump(model, buffer, protocol=pickle.HIGHEST_PROTOCOL)
        return SavedModel("pickle", "sklearn", {"model.pkl": buffer.getvalue()},
                          {"class_path": class_path(model), "trusted_pickle": True,
                           "sklearn_version": _version("sklearn")})
    raise TypeError(f"save_model takes a torch nn.Module or a scikit-learn estimator, not "
                    f"{type(model).__name__}")


def checkpoint_bytes(state: Any) -> bytes:
    """``state`` as ``torch.save`` writes it (tensors, numbers, dicts, lists: what
    ``torch.load(weights_only=True)`` reads back)."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def load_checkpoint_bytes(data: bytes) -> Any:
    """A checkpoint back, without running code a pickle might name (``weights_only``)."""
    import torch

    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _imported(path: str) -> Any:
    import importlib

    module_name, _, attribute = path.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


def rebuild(model: dict[str, Any]) -> Any:
    """A registry version laid out for this process, as the object it was saved from: a
    torch module built again from its class (imported from the job's code, which the worker
    runs in) with its ``init_kwargs``, then given the weights; anything else as the registry
    loads it."""
    from stratus.models.loading import load

    module = (model.get("meta") or {}).get("module") or {}
    if model["format"] == "safetensors" and module.get("class_path"):
        try:
            cls = _imported(str(module["class_path"]))
        except (ImportError, AttributeError) as exc:
            raise LookupError(f"model {model['name']}@{model['version']}: its class "
                              f"{module['class_path']} cannot be imported here ({exc}); run the "
                              "job with the code that trained it") from None
        return load(model, module=cls(**(module.get("init_kwargs") or {})))
    return load(model)
