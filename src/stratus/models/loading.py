"""Loads a model version inside a replica: safetensors memory-mapped without a copy (so every
replica on a host shares one copy through the page cache), transformers models, ONNX
sessions, and trusted pickles. Blobs are checked against their sha256 before use."""

from __future__ import annotations

import json
import mmap
import pickle
import struct
from pathlib import Path
from typing import Any

from stratus.errors import StratusError
from stratus.store.integrity import verify_blob

# safetensors dtype names -> torch dtype attribute names (those this torch build has).
_TORCH_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
    "C64": "complex64", "C128": "complex128",
}


class ModelLoadError(StratusError):
    status = 500
    type = "model_load_error"


def mmap_safetensors(path: str) -> dict[str, Any]:
    """Tensors that view the file's pages directly: no copy, shared by every process that
    maps the file. A private mapping keeps writes (if any) out of the file."""
    import torch

    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
    (length,) = struct.unpack("<Q", mapped[:8])
    header = json.loads(mapped[8 : 8 + length])
    base = 8 + length
    tensors: dict[str, Any] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = getattr(torch, _TORCH_DTYPES.get(entry["dtype"], "-"), None)
        if dtype is None:
            raise ModelLoadError(f"{path}: tensor {name!r} has dtype {entry['dtype']}, which "
                                 "this torch build cannot hold")
        start, end = entry["data_offsets"]
        itemsize = torch.empty((), dtype=dtype).element_size()
        count = (end - start) // itemsize
        flat = torch.frombuffer(mapped, dtype=dtype, count=count, offset=base + start) if count \
            else torch.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(entry["shape"])
    return tensors


def _build(cls: type, device: str | None) -> Any:
    import torch

    try:
        if device is None:
            return cls()
        with torch.device(device):
            return cls()
    except TypeError as exc:
        raise ModelLoadError(f"cannot build {cls.__name__}() without arguments ({exc}); pass "
                             "an instance as module= instead") from None


def _adopt(module: Any, tensors: dict[str, Any]) -> Any:
    try:
        module.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"the weights do not fit {type(module).__name__}: {exc}") from None
    return module


def _as_module(tensors: dict[str, Any], module: Any) -> Any:
    """Build the module without allocating weights, then adopt the mapped tensors as its
    parameters (``assign=True``): a torch module with zero-copy weights."""
    if not isinstance(module, type):
        return _adopt(module, tensors).eval()
    built = _adopt(_build(module, "meta"), tensors)
    if any(t.is_meta for t in [*built.parameters(), *built.buffers()]):
        # Buffers outside the state dict (persistent=False, e.g. rotary frequencies) only get
        # values from the module's own init: build it for real, then adopt the weights.
        built = _adopt(_build(module, None), tensors)
    return built.eval()


def load(model: dict[str, Any], module: Any = None, threads: int = 1) -> Any:
    label = f"model {model['name']}@{model['version']}"
    for relative, entry in model["files"].items():
        verify_blob(entry["path"], entry["sha256"], int(entry["size"]), f"{label} ({relative})")
    directory = Path(model["dir"])
    kind = model["format"]
    if kind == "safetensors":
        tensors: dict[str, Any] = {}
        for relative in sorted(model["files"]):
            if relative.endswith(".safetensors"):
                tensors.update(mmap_safetensors(str(directory / relative)))
        return _as_module(tensors, module) if module is not None else tensors
    if kind == "transformers":
        import transformers

        config = transformers.AutoConfig.from_pretrained(directory)
        architecture = (getattr(config, "architectures", None) or ["AutoModel"])[0]
        cls = getattr(transformers, architecture, transformers.AutoModel)
        return cls.from_pretrained(directory).eval()
    if kind == "onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        path = next(str(directory / r) for r in model["files"] if r.endswith(".onnx"))
        return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    if kind == "pickle":
        if not model.get("meta", {}).get("trusted_pickle"):
            raise ModelLoadError(f"{label} is a pickle that was not pushed as trusted")
        path = str(directory / next(iter(model["files"])))
        if path.endswith(".joblib"):
            import joblib

            return joblib.load(path)
        with open(path, "rb") as handle:
            return pickle.load(handle)
    raise ModelLoadError(f"{label}: unknown format {kind!r}")
