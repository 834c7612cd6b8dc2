"""What a pushed path holds, and its conversion to the canonical form before upload.

- ``*.safetensors`` (or a directory of them): the canonical format, stored as is.
- ``*.pt`` / ``*.pth`` / ``*.bin``: a PyTorch state dict, loaded with ``weights_only=True``
  and converted to safetensors.
- A directory with ``config.json``: a Hugging Face transformers model (config, tokenizer
  files and safetensors weights).
- ``*.gguf``: llama.cpp's format, dequantised by transformers into a transformers directory
  (float32 safetensors, the tokenizer and its chat template; ``stratus[gguf]``, see gguf.py).
- ``*.onnx``: served with onnxruntime.
- ``*.pkl`` / ``*.pickle`` / ``*.joblib``: only with an explicit trust flag, because loading
  a pickle runs whatever code it names.
"""

from __future__ import annotations

import json
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stratus.errors import BadRequest
from stratus.models.gguf import convert_gguf

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
PICKLE_REFUSAL = (
    "refusing to store a pickle: loading one runs any code it names, so a model file from an "
    "untrusted source can take over the replica. Convert it (safetensors or ONNX), or pass "
    "--trust-pickle if you trust where it came from."
)
_SKIP = ("__pycache__",)  # and every hidden file or directory: .git, .gitattributes, ...


@dataclass
class PreparedModel:
    format: str
    files: dict[str, Path | bytes]  # relative path -> a file to upload, or converted bytes
    meta: dict[str, Any] = field(default_factory=dict)
    # Where converted files wait to be uploaded; ``cleanup`` removes it.
    scratch: tempfile.TemporaryDirectory[str] | None = None

    def cleanup(self) -> None:
        if self.scratch is not None:
            self.scratch.cleanup()
            self.scratch = None


def check_safetensors(data: bytes | Path) -> int:
    """Validate a safetensors header; returns the number of tensors."""
    if isinstance(data, Path):
        with open(data, "rb") as handle:
            head = handle.read(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            header_bytes = handle.read(length) if 0 < length < 100_000_000 else b""
    else:
        length = struct.unpack("<Q", data[:8])[0] if len(data) >= 8 else -1
        header_bytes = data[8 : 8 + length] if 0 < length < 100_000_000 else b""
    try:
        header = json.loads(header_bytes)
    except ValueError:
        raise BadRequest("not a safetensors file: its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise BadRequest("not a safetensors file: its header is not a JSON object")
    return sum(1 for key in header if key != "__metadata__")


def _state_dict(loaded: Any) -> Mapping[str, Any]:
    import torch

    if isinstance(loaded, Mapping) and "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping):
        loaded = loaded["state_dict"]  # the usual training-checkpoint wrapper
    if not isinstance(loaded, Mapping) or not loaded or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in loaded.items()
    ):
        raise BadRequest("a .pt/.bin file must hold a state dict (a mapping of name to tensor)")
    return loaded


def convert_torch(path: Path) -> bytes:
    """A state dict to safetensors bytes; ``weights_only=True`` refuses pickled code."""
    import torch
    from safetensors.torch import save

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BadRequest(f"{path.name} could not be loaded as a PyTorch state dict with "
                         f"weights_only=True: {exc}") from None
    tensors = {name: tensor.detach().contiguous().clone() for name, tensor in _state_dict(loaded).items()}
    data: bytes = save(tensors)
    return data


def import_gguf(path: Path) -> PreparedModel:
    """A GGUF file as a transformers directory, written to a scratch directory (hundreds of
    MB once dequantised: too big to hold as bytes)."""
    scratch = tempfile.TemporaryDirectory(prefix="stratus-gguf-")
    try:
        meta = convert_gguf(path, Path(scratch.name))
    except BaseException:
        scratch.cleanup()
        raise
    return PreparedModel("transformers", dict(_directory(Path(scratch.name))), meta, scratch)


def _directory(path: Path) -> dict[str, Path]:
    return {
        str(item.relative_to(path).as_posix()): item
        for item in sorted(path.rglob("*"))
        if item.is_file() and not any(part in _SKIP or part.startswith(".")
                                      for part in item.relative_to(path).parts)
    }


def prepare(path: Path, trust_pickle: bool = False) -> PreparedModel:
    if not path.exists():
        raise BadRequest(f"{path} does not exist")
    if path.is_dir():
        files = _directory(path)
        weights = [name for name in files if name.endswith(".safetensors")]
        if (path / "config.json").is_file():
            if not weights:
                raise BadRequest(f"{path} holds no *.safetensors weights; save it with "
                                 "save_pretrained(..., safe_serialization=True)")
            for name in weights:
                check_safetensors(files[name])
            return PreparedModel("transformers", dict(files))
        indexes = [name for name in files if name.endswith(".index.json")]
        if weights and len(weights) + len(indexes) == len(files):  # shards, maybe with an index
            for name in weights:
                check_safetensors(files[name])
            return PreparedModel("safetensors", dict(files))
        raise BadRequest(f"{path} is neither a transformers model (no config.json) nor a "
                         "directory of *.safetensors shards")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        check_safetensors(path)
        return PreparedModel("safetensors", {path.name: path})
    if suffix in TORCH_SUFFIXES:
        return PreparedModel("safetensors", {path.with_suffix(".safetensors").name: convert_torch(path)},
                             {"source_format": "pytorch"})
    if suffix == ".gguf":
        return import_gguf(path)
    if suffix == ".onnx":
        return PreparedModel("onnx", {path.name: path})
    if suffix in PICKLE_SUFFIXES:
        if not trust_pickle:
            raise BadRequest(PICKLE_REFUSAL)
        return PreparedModel("pickle", {path.name: path}, {"trusted_pickle": True})
    raise BadRequest(f"{path.name}: unsupported model file (safetensors, .pt/.bin state dict, "
                     "a transformers directory, .gguf, .onnx, or a pickle with --trust-pickle)")
