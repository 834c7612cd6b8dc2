"""What ``stratus models push`` makes of a path: each format detected, a .pt state dict converted
to safetensors (and nothing else accepted from a .pt), pickles refused unless trusted."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from stratus.errors import BadRequest
from stratus.models.formats import PICKLE_REFUSAL, check_safetensors, convert_torch, prepare


def _tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return {
        "encoder.weight": torch.randn(8, 4, generator=generator),
        "encoder.bias": torch.randn(8, generator=generator),
        "half": torch.randn(3, 3, generator=generator).to(torch.float16),
        "bf16": torch.randn(5, generator=generator).to(torch.bfloat16),
        "steps": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
    }


def _assert_same(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name, tensor in expected.items():
        assert actual[name].dtype == tensor.dtype, name
        assert actual[name].shape == tensor.shape, name
        assert torch.equal(actual[name], tensor), name


# -- safetensors ----------------------------------------------------------------------
def test_a_safetensors_file_is_stored_as_is(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file(_tensors(), path)
    prepared = prepare(path)
    assert prepared.format == "safetensors"
    assert prepared.files == {"model.safetensors": path}
    assert prepared.meta == {}
    assert check_safetensors(path) == len(_tensors())


def test_the_suffix_is_matched_case_insensitively(tmp_path: Path) -> None:
    path = tmp_path / "Model.SAFETENSORS"
    save_file(_tensors(), path)
    assert prepare(path).format == "safetensors"


def test_a_directory_of_safetensors_shards(tmp_path: Path) -> None:
    (tmp_path / "shards" / "sub").mkdir(parents=True)
    save_file({"a": torch.ones(2)}, tmp_path / "shards" / "part-1.safetensors")
    save_file({"b": torch.ones(2)}, tmp_path / "shards" / "sub" / "part-2.safetensors")
    (tmp_path / "shards" / "__pycache__").mkdir()
    (tmp_path / "shards" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (tmp_path / "shards" / ".DS_Store").write_bytes(b"\0")
    prepared = prepare(tmp_path / "shards")
    assert prepared.format == "safetensors"
    assert sorted(prepared.files) == ["part-1.safetensors", "sub/part-2.safetensors"]


def test_a_directory_mixing_shards_and_other_files_is_refused(tmp_path: Path) -> None:
    save_file({"a": torch.ones(2)}, tmp_path / "part.safetensors")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(BadRequest, match="neither a transformers model"):
        prepare(tmp_path)


@pytest.mark.parametrize("content", [
    b"", b"\x01\x00", struct.pack("<Q", 5) + b"nope!", struct.pack("<Q", 2) + b"[]",
    struct.pack("<Q", 10**12) + b"{}", b"PK\x03\x04 this is a zip file, not safetensors",
])
def test_a_file_named_safetensors_with_a_bad_header_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(BadRequest, match="not a safetensors file"):
        prepare(path)
    with pytest.raises(BadRequest, match="not a safetensors file"):
        check_safetensors(content)


def test_check_safetensors_counts_tensors_and_skips_metadata() -> None:
    header = json.dumps({"__metadata__": {"format": "pt"},
                         "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    assert check_safetensors(struct.pack("<Q", len(header)) + header + b"\0" * 4) == 1


# -- PyTorch state dicts ------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_a_state_dict_is_converted_to_safetensors_and_round_trips(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"weights{suffix}"
    torch.save(_tensors(), path)
    prepared = prepare(path)
    assert prepared.format == "safetensors"
    assert prepared.meta == {"source_format": "pytorch"}
    assert list(prepared.files) == ["weights.safetensors"]
    data = prepared.files["weights.safetensors"]
    assert isinstance(data, bytes)
    assert check_safetensors(data) == len(_tensors())
    _assert_same(load_safetensors(data), _tensors())


def test_a_module_state_dict_with_shared_and_strided_tensors_converts(tmp_path: Path) -> None:
    """Tied weights (one storage under two names) and non-contiguous views are what real
    checkpoints hold; safetensors refuses both as such, so the conversion must copy them."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    model[1].weight = model[0].weight  # tied
    state = model.state_dict()
    state["transposed"] = torch.arange(12.0).reshape(3, 4).t()
    assert not state["transposed"].is_contiguous()
    path = tmp_path / "model.pt"
    torch.save(state, path)
    converted = load_safetensors(convert_torch(path))
    _assert_same(converted, {k: v.contiguous() for k, v in state.items()})


def test_a_training_checkpoint_wrapper_is_unwrapped(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": _tensors(), "epoch": 3, "optimizer": {"lr": 0.1}}, path)
    _assert_same(load_safetensors(convert_torch(path)), _tensors())


@pytest.mark.parametrize("content", [
    {"a": torch.ones(2), "epoch": 3},  # a value that is not a tensor
    [torch.ones(2)],  # not a mapping
    {},  # empty
    torch.ones(3),  # a bare tensor
    {1: torch.ones(2)},  # a key that is not a name
])
def test_a_pt_file_that_is_not_a_state_dict_is_refused(tmp_path: Path, content: Any) -> None:
    path = tmp_path / "model.pt"
    torch.save(content, path)
    with pytest.raises(BadRequest, match="must hold a state dict"):
        prepare(path)


def test_a_pickled_module_fails_under_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), path)  # the whole module: a pickle naming its class
    with pytest.raises(BadRequest, match="weights_only=True") as caught:
        prepare(path)
    assert "model.pt could not be loaded as a PyTorch state dict" in caught.value.message


class _Payload:
    """Unpickling this runs a function of the attacker's choice."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "pwned"))


def test_pickled_code_in_a_pt_file_is_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.ones(2), "payload": _Payload(marker)}, path)
    with pytest.raises(BadRequest, match="weights_only=True"):
        prepare(path)
    assert not marker.exists(), "converting a .pt ran code from the pickle"
    plain = tmp_path / "evil.bin"  # a plain pickle renamed: no torch zip container at all
    plain.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    with pytest.raises(BadRequest, match="weights_only=True"):
        prepare(plain)
    assert not marker.exists()


def test_a_corrupt_pt_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x00not a torch file")
    with pytest.raises(BadRequest, match="could not be loaded as a PyTorch state dict"):
        prepare(path)


# -- transformers directories -------------------------------------------------------
def test_a_transformers_directory(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (tmp_path / "tokenizer.json").write_text("{}")
    save_file({"w": torch.ones(2)}, tmp_path / "model.safetensors")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref")
    # Hub checkouts carry these; the server refuses hidden paths, so they are never sent.
    (tmp_path / ".gitattributes").write_text("*.safetensors filter=lfs")
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / ".hidden").write_text("x")
    prepared = prepare(tmp_path)
    assert prepared.format == "transformers"
    assert sorted(prepared.files) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert prepared.files["config.json"] == tmp_path / "config.json"


def test_a_transformers_directory_without_safetensors_weights_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    torch.save({"w": torch.ones(2)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(BadRequest, match=r"holds no \*\.safetensors weights") as caught:
        prepare(tmp_path)
    assert "safe_serialization=True" in caught.value.message


def test_a_transformers_directory_with_broken_weights_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"garbage!garbage!")
    with pytest.raises(BadRequest, match="not a safetensors file"):
        prepare(tmp_path)


def test_a_directory_of_something_else_is_refused(tmp_path: Path) -> None:
    (tmp_path / "readme.md").write_text("hi")
    with pytest.raises(BadRequest, match="neither a transformers model"):
        prepare(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadRequest, match="neither a transformers model"):
        prepare(empty)


# -- ONNX, pickles, the rest -------------------------------------------------------
def test_an_onnx_file(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x09")  # detection goes by name; onnxruntime checks it on load
    prepared = prepare(path)
    assert prepared.format == "onnx" and prepared.files == {"model.onnx": path}


@pytest.mark.parametrize("name", ["model.pkl", "model.pickle", "model.joblib"])
def test_a_pickle_is_refused_without_trust(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / name
    path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(BadRequest) as caught:
        prepare(path)
    assert caught.value.message == PICKLE_REFUSAL
    assert "runs any code it names" in caught.value.message
    assert "--trust-pickle" in caught.value.message
    assert not marker.exists(), "detecting a pickle must not load it"


@pytest.mark.parametrize("name", ["model.pkl", "model.pickle", "model.joblib"])
def test_a_trusted_pickle_is_stored_as_is_and_not_loaded(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / name
    path.write_bytes(pickle.dumps(_Payload(marker)))
    prepared = prepare(path, trust_pickle=True)
    assert prepared.format == "pickle"
    assert prepared.files == {name: path}
    assert prepared.meta == {"trusted_pickle": True}
    assert not marker.exists(), "pushing a pickle must not load it client-side either"


@pytest.mark.parametrize("name", ["model.h5", "model.txt", "model.tflite", "model"])
def test_unsupported_files_are_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"x")
    with pytest.raises(BadRequest, match="unsupported model file"):
        prepare(path)


def test_a_missing_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="does not exist"):
        prepare(tmp_path / "nope.safetensors")
