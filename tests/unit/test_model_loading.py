"""Loading a model inside a replica: safetensors mapped without a copy (and shared between
loads), torch modules adopting the mapped tensors, the other formats, and blob verification."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from stratus.models import loading as modelload
from stratus.models.loading import ModelLoadError, load, mmap_safetensors, verify_blob
from stratus.security.masterkey import load_keyring
from stratus.store import integrity
from stratus.store.artifacts import ArtifactStore
from stratus.store.integrity import CorruptBlob
from stratus.store.plaincache import PlainCache


def _tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return {
        "big": torch.randn(256, 1024, generator=generator),  # 1 MiB
        "f64": torch.randn(7, generator=generator, dtype=torch.float64),
        "f16": torch.randn(2, 3, generator=generator).half(),
        "bf16": torch.randn(4, generator=generator).bfloat16(),
        "i64": torch.arange(10, dtype=torch.int64),
        "i32": torch.arange(-3, 3, dtype=torch.int32),
        "i16": torch.tensor([1, -2], dtype=torch.int16),
        "i8": torch.tensor([-128, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
    }


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "weights.safetensors"
    save_file(_tensors(), path)
    with open(path, "rb") as handle:  # clean page-cache pages, as an uploaded (fsynced) blob has
        os.fsync(handle.fileno())
    return path


def _regions(path: Path) -> list[dict[str, int]]:
    """This process's mappings of ``path``: address range and the smaps counters (in kB)."""
    target = os.path.realpath(path)
    regions: list[dict[str, int]] = []
    current: dict[str, int] | None = None
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if fields and not fields[0].endswith(":") and "-" in fields[0]:
                current = None
                if len(fields) >= 6 and fields[5] == target:
                    low, high = (int(part, 16) for part in fields[0].split("-"))
                    current = {"low": low, "high": high}
                    regions.append(current)
            elif current is not None and fields and fields[0].endswith(":") and len(fields) >= 2 \
                    and fields[1].isdigit():
                current[fields[0][:-1]] = int(fields[1])
    return regions


def _inside(pointer: int, regions: list[dict[str, int]]) -> bool:
    return any(region["low"] <= pointer < region["high"] for region in regions)


# -- safetensors, memory-mapped ------------------------------------------------------
def test_mmap_returns_the_right_tensors(weights: Path) -> None:
    loaded = mmap_safetensors(str(weights))
    expected = load_file(weights)
    assert loaded.keys() == expected.keys()
    for name, tensor in expected.items():
        assert loaded[name].dtype == tensor.dtype, name
        assert loaded[name].shape == tensor.shape, name
        assert torch.equal(loaded[name], tensor), name


def test_mmap_tensors_view_the_file_pages_without_a_copy(weights: Path) -> None:
    loaded = mmap_safetensors(str(weights))
    regions = _regions(weights)
    assert len(regions) == 1, regions
    for name, tensor in loaded.items():
        if tensor.numel():
            assert _inside(tensor.untyped_storage().data_ptr(), regions), f"{name} is a copy"
            assert _inside(tensor.data_ptr(), regions), name
    float(loaded["big"].sum())  # touch every page of the big tensor
    region = _regions(weights)[0]
    assert region["Rss"] >= 1024, "the touched weights are resident in the mapping"
    assert region["Anonymous"] == 0, "reading the weights copied them into private memory"
    assert region["Private_Dirty"] == 0


def test_two_loads_of_one_file_share_its_pages(weights: Path) -> None:
    first = mmap_safetensors(str(weights))
    second = mmap_safetensors(str(weights))
    assert first["big"].data_ptr() != second["big"].data_ptr(), "two distinct mappings"
    assert torch.equal(first["big"], second["big"])
    float(first["big"].sum())
    float(second["big"].sum())
    regions = _regions(weights)
    assert len(regions) == 2
    for region in regions:
        assert region["Rss"] >= 1024
        # Each physical page is mapped twice: a mapping's proportional share is half its RSS.
        assert region["Pss"] <= 0.6 * region["Rss"], regions
        assert region["Anonymous"] == 0 and region["Private_Dirty"] == 0, regions


def test_writing_to_a_mapped_tensor_never_reaches_the_file(weights: Path) -> None:
    before = weights.read_bytes()
    loaded = mmap_safetensors(str(weights))
    loaded["big"].add_(1.0)
    loaded["i64"][0] = 99
    assert weights.read_bytes() == before
    assert torch.equal(mmap_safetensors(str(weights))["i64"], torch.arange(10))


def test_metadata_is_not_a_tensor(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.ones(2)}, path, metadata={"format": "pt"})
    assert list(mmap_safetensors(str(path))) == ["w"]


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.uint16])
def test_every_dtype_safetensors_writes_loads(tmp_path: Path, dtype: torch.dtype) -> None:
    path = tmp_path / "q.safetensors"
    tensor = torch.arange(4).to(dtype)
    save_file({"q": tensor}, path)
    loaded = mmap_safetensors(str(path))["q"]
    assert loaded.dtype == dtype
    assert torch.equal(loaded.view(torch.uint8), tensor.view(torch.uint8))


# -- module= ---------------------------------------------------------------------------
class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(4, 8)
        self.out = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))


def _tiny_weights(path: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(11)
    state = {name: tensor.detach().clone() for name, tensor in TinyNet().state_dict().items()}
    save_file(state, path)
    return state


def test_module_instance_adopts_the_mapped_tensors(tmp_path: Path) -> None:
    path = tmp_path / "linear.safetensors"
    weight, bias = torch.randn(3, 4), torch.randn(3)
    save_file({"weight": weight, "bias": bias}, path)
    tensors = mmap_safetensors(str(path))
    module = modelload._as_module(tensors, torch.nn.Linear(4, 3))
    assert module.weight.data_ptr() == tensors["weight"].data_ptr()
    assert module.bias.data_ptr() == tensors["bias"].data_ptr()
    assert _inside(module.weight.data_ptr(), _regions(path))
    assert not module.training
    x = torch.randn(5, 4)
    with torch.inference_mode():
        assert torch.allclose(module(x), x @ weight.T + bias)


def test_module_class_is_built_on_meta_and_gets_the_mapped_tensors(tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    state = _tiny_weights(path)
    tensors = mmap_safetensors(str(path))
    module = modelload._as_module(tensors, TinyNet)
    assert isinstance(module, TinyNet) and not module.training
    for name, parameter in module.named_parameters():
        assert parameter.device.type == "cpu", name
        assert parameter.data_ptr() == tensors[name].data_ptr(), f"{name} was copied"
        assert _inside(parameter.data_ptr(), _regions(path)), name
    reference = TinyNet()
    reference.load_state_dict(state)
    x = torch.randn(6, 4)
    with torch.inference_mode():
        assert torch.allclose(module(x), reference(x))


def test_load_with_module_through_a_laid_out_model(tmp_path: Path) -> None:
    source = tmp_path / "tiny.safetensors"
    state = _tiny_weights(source)
    model = _lay_out(tmp_path, {"tiny.safetensors": source.read_bytes()}, "safetensors")
    module = load(model, module=TinyNet)
    blob = model["files"]["tiny.safetensors"]["path"]
    for name, parameter in module.named_parameters():
        assert torch.equal(parameter, state[name])
        assert _inside(parameter.data_ptr(), _regions(Path(blob))), name
    tensors = load(model)
    assert isinstance(tensors, dict) and tensors.keys() == state.keys()


@pytest.mark.parametrize(("change", "words"), [
    (lambda s: s.pop("out.bias"), "Missing key"),
    (lambda s: s.update({"extra.weight": torch.ones(1)}), "Unexpected key"),
    (lambda s: s.update({"hidden.weight": torch.ones(8, 5)}), "size mismatch"),
])
def test_weights_that_do_not_fit_the_module_fail_clearly(tmp_path: Path, change: Any, words: str) -> None:
    path = tmp_path / "tiny.safetensors"
    state = _tiny_weights(path)
    change(state)
    save_file(state, path)
    with pytest.raises(ModelLoadError, match="the weights do not fit TinyNet") as caught:
        modelload._as_module(mmap_safetensors(str(path)), TinyNet)
    assert words in caught.value.message


class WithBuffer(torch.nn.Module):
    """A module with a non-persistent buffer (as rotary embeddings' inv_freq): it is computed in
    __init__ and is not part of the state dict."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)
        self.register_buffer("scale", torch.full((3,), 2.0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * self.scale


def test_module_class_with_a_non_persistent_buffer_works(tmp_path: Path) -> None:
    path = tmp_path / "buffered.safetensors"
    weight, bias = torch.randn(3, 4), torch.randn(3)
    save_file({"fc.weight": weight, "fc.bias": bias}, path)
    module = modelload._as_module(mmap_safetensors(str(path)), WithBuffer)
    x = torch.randn(2, 4)
    with torch.inference_mode():
        assert torch.allclose(module(x), (x @ weight.T + bias) * 2.0)


# -- the other formats through load() ---------------------------------------------------
async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _lay_out(tmp_path: Path, files: dict[str, bytes], fmt: str,
             meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the server hands a replica: blobs sealed in the store, their plaintext decrypted
    into the cache, a directory of links, their paths."""
    plain = PlainCache(Path(tempfile.mkdtemp(dir=tmp_path)) / "plain")
    plain.open()
    store = ArtifactStore(tmp_path / "artifacts", load_keyring(tmp_path, environ={}), plain)
    entries: dict[str, dict[str, Any]] = {}
    for relative, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        asyncio.run(store.write_blob(digest, _chunks(data), len(data)))
        path = store.plain_blob(digest, len(data), relative)
        entries[relative] = {"sha256": digest, "size": len(data), "path": str(path)}
    directory = store.model_dir(entries)
    return {"name": "m", "version": "1.0.0", "ref": "m@1.0.0", "format": fmt, "files": entries,
            "dir": str(directory), "meta": meta or {}}


def test_model_dir_links_the_blobs_under_their_names(tmp_path: Path) -> None:
    model = _lay_out(tmp_path, {"config.json": b"{}", "sub/w.bin": b"\1\2"}, "transformers")
    directory = Path(model["dir"])
    assert (directory / "config.json").read_bytes() == b"{}"
    assert (directory / "sub" / "w.bin").is_symlink()
    assert os.path.realpath(directory / "sub" / "w.bin") == model["files"]["sub/w.bin"]["path"]


def test_load_onnx(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["doubled"]),
         helper.make_node("Add", ["doubled", "one"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
         helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(proto)
    session = load(_lay_out(tmp_path, {"affine.onnx": proto.SerializeToString()}, "onnx"), threads=1)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    (y,) = session.run(None, {"x": x})
    assert np.allclose(y, x * 2 + 1)


class _Scaler:
    def __init__(self, factor: float) -> None:
        self.factor = factor


def test_load_trusted_pickle(tmp_path: Path) -> None:
    model = _lay_out(tmp_path, {"m.pkl": pickle.dumps({"factor": 3.0})}, "pickle",
                     {"trusted_pickle": True})
    assert load(model) == {"factor": 3.0}


def test_load_refuses_a_pickle_not_pushed_as_trusted(tmp_path: Path) -> None:
    model = _lay_out(tmp_path, {"m.pkl": pickle.dumps({"factor": 3.0})}, "pickle")
    with pytest.raises(ModelLoadError, match="a pickle that was not pushed as trusted"):
        load(model)


def test_load_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="unknown format 'tflite'"):
        load(_lay_out(tmp_path, {"m.tflite": b"x"}, "tflite"))


def test_load_verifies_blobs_before_use(tmp_path: Path) -> None:
    source = tmp_path / "tiny.safetensors"
    _tiny_weights(source)
    model = _lay_out(tmp_path, {"tiny.safetensors": source.read_bytes()}, "safetensors")
    blob = Path(model["files"]["tiny.safetensors"]["path"])  # the decrypted copy, read-only
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.chmod(0o600)
    blob.write_bytes(bytes(data))
    with pytest.raises(CorruptBlob, match=r"model m@1\.0\.0 \(tiny\.safetensors\) is corrupted"):
        load(model, module=TinyNet)


# -- verify_blob ---------------------------------------------------------------------
@pytest.fixture
def blob(tmp_path: Path) -> tuple[Path, str, int]:
    data = os.urandom(300_000)
    path = tmp_path / "blob"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest(), len(data)


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = integrity.sha256_file

    def counting(path: str) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(integrity, "sha256_file", counting)
    return calls


def test_verify_accepts_a_good_blob_and_leaves_a_marker(blob: tuple[Path, str, int]) -> None:
    path, digest, size = blob
    verify_blob(str(path), digest, size, "m@1.0.0 (w)")
    marker = json.loads(Path(f"{path}.verified").read_text())
    stat = path.stat()
    assert marker == {"sha256": digest, "size": size, "mtime_ns": stat.st_mtime_ns}


def test_verify_hashes_only_when_the_marker_is_stale(blob: tuple[Path, str, int], hashes: list[str]) -> None:
    path, digest, size = blob
    verify_blob(str(path), digest, size, "w")
    assert len(hashes) == 1
    for _ in range(3):
        verify_blob(str(path), digest, size, "w")
    assert len(hashes) == 1, "an up-to-date marker spares the hash"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    verify_blob(str(path), digest, size, "w")
    assert len(hashes) == 2, "a changed mtime makes the marker stale"
    verify_blob(str(path), digest, size, "w")
    assert len(hashes) == 2
    Path(f"{path}.verified").write_text("{not json")
    verify_blob(str(path), digest, size, "w")
    assert len(hashes) == 3, "an unreadable marker is no marker"
    other = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(CorruptBlob):
        verify_blob(str(path), other, size, "w")  # a marker is for one digest only
    assert len(hashes) == 4


def test_verify_detects_a_corrupted_blob_of_the_same_size(blob: tuple[Path, str, int]) -> None:
    path, digest, size = blob
    verify_blob(str(path), digest, size, "m@1.0.0 (model.safetensors)")
    data = bytearray(path.read_bytes())
    data[size // 2] ^= 0x01  # one flipped bit
    path.write_bytes(bytes(data))
    assert path.stat().st_size == size
    with pytest.raises(CorruptBlob) as caught:
        verify_blob(str(path), digest, size, "m@1.0.0 (model.safetensors)")
    message = caught.value.message
    assert message.startswith("m@1.0.0 (model.safetensors) is corrupted")
    assert f"blob {digest[:12]}" in message and "now has sha256" in message
    assert "push it again" in message
    with pytest.raises(CorruptBlob, match="is corrupted"):  # and stays detected
        verify_blob(str(path), digest, size, "m@1.0.0 (model.safetensors)")


def test_verify_detects_a_truncated_blob(blob: tuple[Path, str, int], hashes: list[str]) -> None:
    path, digest, size = blob
    verify_blob(str(path), digest, size, "w")
    with open(path, "r+b") as handle:
        handle.truncate(size - 1000)
    with pytest.raises(CorruptBlob, match=f"is corrupted: blob {digest[:12]} now has "
                                             f"{size - 1000} bytes, expected {size}"):
        verify_blob(str(path), digest, size, "w")
    assert len(hashes) == 1, "a size mismatch needs no hash"


def test_verify_reports_a_missing_blob(tmp_path: Path) -> None:
    digest = "ab" * 32
    with pytest.raises(CorruptBlob, match=f"m@2.0.0 \\(w\\): blob {digest[:12]} is missing"):
        verify_blob(str(tmp_path / "gone"), digest, 10, "m@2.0.0 (w)")


def test_model_load_error_is_a_server_error() -> None:
    error = ModelLoadError("x")
    assert error.status == 500 and error.type == "model_load_error"


# -- what the handler sees: ctx.load_model, ctx.model_path, ctx.model_info ----------------
def _context(models: list[dict[str, Any]]) -> Any:
    import logging

    from stratus.sdk.context import Context

    return Context(deployment="d", namespace="default", revision=1, replica_id="d-1-x", config={},
                   env={}, memory_mb=None, timeout_s=1.0, logger=logging.getLogger("test"),
                   models=models)


def test_context_loads_a_declared_model(tmp_path: Path) -> None:
    source = tmp_path / "tiny.safetensors"
    state = _tiny_weights(source)
    model = {**_lay_out(tmp_path, {"tiny.safetensors": source.read_bytes()}, "safetensors"),
             "ref": "m@production", "stage": "production", "meta": {"framework": "pytorch"}}
    ctx = _context([model])
    assert ctx.model_path("m") == model["dir"]
    assert ctx.model_info("m") == {"name": "m", "version": "1.0.0", "stage": "production",
                                   "format": "safetensors", "meta": {"framework": "pytorch"}}
    tensors = ctx.load_model("m", version="1.0.0", stage="production")
    assert tensors.keys() == state.keys()
    module = ctx.load_model("m", module=TinyNet)
    assert isinstance(module, TinyNet)


def test_context_refuses_what_the_deployment_did_not_declare(tmp_path: Path) -> None:
    model = {**_lay_out(tmp_path, {"w.safetensors": b"x"}, "safetensors"), "ref": "m@1.0.0", "stage": None}
    ctx = _context([model])
    with pytest.raises(LookupError, match=r"resolves m@1\.0\.0 to version 1\.0\.0, not 2\.0\.0"):
        ctx.load_model("m", version="2.0.0")
    with pytest.raises(LookupError, match=r"declares m@1\.0\.0, not m@production"):
        ctx.load_model("m", stage="production")
    with pytest.raises(LookupError, match=r"model 'other' is not declared by this deployment "
                                          r"\(declared: m@1\.0\.0\); deploy with --model other@"):
        ctx.load_model("other")
    with pytest.raises(LookupError, match=r"declared: none"):
        _context([]).model_path("m")
