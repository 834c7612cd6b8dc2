"""The GGUF import's refusals on small files written with the ``gguf`` package: a file that is
not GGUF, a truncated one, and an architecture transformers cannot map are each one clear
``BadRequest``, and leave no scratch directory behind. (The real model's import is in
tests/integration/test_gguf.py and test_gguf_greedy.py.)"""

from __future__ import annotations

import tempfile
from pathlib import Path

import gguf
import numpy as np
import pytest

from stratus.errors import BadRequest
from stratus.models.formats import prepare
from stratus.models.gguf import check_gguf


def write_gguf(path: Path, architecture: str) -> Path:
    writer = gguf.GGUFWriter(str(path), arch=architecture)
    writer.add_block_count(1)
    writer.add_tensor("blk.0.ffn_up.weight", np.ones((8, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own temporary directory, where the import makes its scratch directories."""
    own = tmp_path / "tmp"
    own.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(own))
    return own


def test_a_whole_file_passes_the_check(tmp_path: Path) -> None:
    check_gguf(write_gguf(tmp_path / "whole.gguf", "llama"))


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.gguf"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(BadRequest, match=r"weights.gguf is not a GGUF file"):
        prepare(path)


@pytest.mark.parametrize("keep", [4, 30, 100, -8])
def test_a_truncated_file_is_refused_before_the_import(tmp_path: Path, scratch: Path, keep: int) -> None:
    data = write_gguf(tmp_path / "whole.gguf", "llama").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:keep])
    with pytest.raises(BadRequest, match=r"cut.gguf .*truncated"):
        prepare(cut)
    assert not any(scratch.iterdir())


def test_an_architecture_transformers_cannot_map_is_refused(tmp_path: Path, scratch: Path) -> None:
    path = write_gguf(tmp_path / "odd.gguf", "notreal")
    refusal = r"transformers could not import odd.gguf \(architecture 'notreal'\)"
    with pytest.raises(BadRequest, match=refusal):
        prepare(path)
    assert not any(scratch.iterdir())
