"""Imports a GGUF file (llama.cpp's format) as a transformers model directory, dequantised.

Hugging Face transformers reads the file (with the ``gguf`` package, and ``accelerate``) and
unpacks its quantised blocks into plain float32 tensors; the result is saved as safetensors with
the tokenizer and its chat template, so the model store and the engine treat it like any other
transformers directory. The quantisation is not kept: see docs/models.md.
"""

from __future__ import annotations

import functools
import importlib
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stratus.errors import BadRequest

MAGIC = b"GGUF"
EXTRA_HINT = "pip install 'stratus[gguf]'"


def check_gguf(path: Path) -> Any:
    """A cheap look before the slow import: the magic, and a header that ``gguf`` can parse
    whose tensors all lie inside the file (a truncated download fails here). Returns the
    ``gguf.GGUFReader`` (the file memory-mapped, nothing read in)."""
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != MAGIC:
        raise BadRequest(f"{path.name} is not a GGUF file (it does not start with {MAGIC!r})")
    gguf = _require("gguf")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # the reader raises ValueError, IndexError... for a damaged file
        raise BadRequest(f"{path.name} is not a readable GGUF file (truncated or damaged?): "
                         f"{type(exc).__name__}: {exc}") from None
    size = path.stat().st_size
    for tensor in reader.tensors:
        if tensor.data_offset + tensor.n_bytes > size:
            raise BadRequest(f"{path.name} is truncated: tensor {tensor.name} ends past the end "
                             f"of the file ({size} bytes)")
    return reader


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise BadRequest(f"importing a .gguf file needs the {module!r} package: {EXTRA_HINT}") from None


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Errors only from transformers' logger: its load warnings (no GGUF kernel, so the whole
    model is dequantised) say what this import does on purpose. Its own progress bars (loading
    and writing, each a blink) go too; the dequantisation's, the slow part, stays on a
    terminal. On a pipe it goes as well: tqdm would write a line per redraw, joined by carriage
    returns, into the log or CI page reading it (the CLI draws no bar on a pipe either)."""
    from transformers.utils import logging as hf_logging

    gguf_utils: Any = importlib.import_module("transformers.modeling_gguf_pytorch_utils")

    level = hf_logging.get_verbosity()
    bars_on = hf_logging.is_progress_bar_enabled()
    dequantise_bar = gguf_utils.tqdm  # plain tqdm, which the logger's switch does not reach
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    if not sys.stderr.isatty():  # where tqdm draws
        gguf_utils.tqdm = functools.partial(dequantise_bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = dequantise_bar
        hf_logging.set_verbosity(level)
        if bars_on:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


@contextmanager
def _one_reader(gguf: Any, reader: Any, path: Path) -> Iterator[None]:
    """transformers opens the file three times (its config, its tokenizer's config, then its
    tensors), and each ``GGUFReader`` parses every metadata field again in Python: the 49,152
    strings of a vocabulary take seconds each time, a third of the whole import. While this
    import runs, a reader of this file is the one already parsed (read-only, memory-mapped)."""
    original = gguf.GGUFReader
    target = path.resolve()

    def reader_of(file: Any, *args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs and Path(file).resolve() == target:
            return reader
        return original(file, *args, **kwargs)

    gguf.GGUFReader = reader_of
    try:
        yield
    finally:
        gguf.GGUFReader = original


def convert_gguf(path: Path, into: Path) -> dict[str, Any]:
    """Dequantise ``path`` into the transformers directory ``into``; returns what the import
    kept of the file's description (architecture, quantisation, the stored dtype)."""
    reader = check_gguf(path)
    _require("accelerate")
    import torch
    import transformers

    gguf = _require("gguf")
    architecture = _field(reader, "general.architecture")
    file_type = _field(reader, "general.file_type")
    known = isinstance(file_type, int) and file_type in set(gguf.LlamaFileType)
    quantisation = gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_") if known else None
    name = path.name
    # Alone in a directory of its own: transformers also reads a tokenizer_config.json or
    # config.json it finds beside the file, and would mix a stranger's into this model.
    with tempfile.TemporaryDirectory(prefix="stratus-gguf-") as alone, _quiet_transformers(), \
            _one_reader(gguf, reader, path):
        (Path(alone) / name).symlink_to(path.resolve())
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(alone, gguf_file=name)
            # float32: the CPU's fast path, and exact for every quantised block (a bf16 copy
            # would round the dequantised weights a second time).
            model = transformers.AutoModelForCausalLM.from_pretrained(
                alone, gguf_file=name, dtype=torch.float32,
                quantization_config=transformers.GgufConfig(dequantize=True))
        except Exception as exc:  # an architecture it does not map, a damaged tensor...
            raise BadRequest(f"transformers could not import {name} (architecture "
                             f"{architecture!r}): {type(exc).__name__}: {exc}") from None
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:  # every weight is a plain tensor by now: save it as one
            quantizer.remove_quantization_config(model)
        model.save_pretrained(str(into))
        tokenizer.save_pretrained(str(into))
    return {"source_format": "gguf", "gguf_architecture": architecture,
            "gguf_quantisation": quantisation, "dtype": "float32",
            "chat_template": bool(getattr(tokenizer, "chat_template", None))}


def _field(reader: Any, key: str) -> Any:
    """A metadata value of the file (a string or a number), or None when it has none."""
    field = reader.fields.get(key)
    return None if field is None else field.contents()
