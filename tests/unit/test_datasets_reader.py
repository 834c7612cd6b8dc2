"""The dataset service and the reader a job uses, on a real sealed artifact store and a real
SQLite database: push (idempotent, immutable), resolve to a JSON layout, read splits as Arrow,
pandas and torch, the same rows every time, and the store's namespaces and deletions."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_iris

from stratus.datasets.reader import open_split
from stratus.datasets.service import DatasetPushRequest, DatasetService
from stratus.errors import BadRequest, Conflict, NotFound
from stratus.security.masterkey import load_keyring
from stratus.store.artifacts import ArtifactStore
from stratus.store.blobs import NamespaceBlobs
from stratus.store.datasets import DatasetStore
from stratus.store.db import make_engine, migrate, sqlite_url
from stratus.store.owners import BlobOwners
from stratus.store.plaincache import PlainCache

FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


class Harness:
    def __init__(self, root: Path) -> None:
        plain = PlainCache(root / "plain")
        plain.open()
        self.artifacts = ArtifactStore(root / "artifacts", load_keyring(root, environ={}), plain)
        engine = make_engine(sqlite_url(root))
        migrate(engine)
        self.blobs = NamespaceBlobs(self.artifacts, BlobOwners(engine))
        self.service = DatasetService(DatasetStore(engine), self.blobs)

    def upload(self, data: bytes, namespace: str = "default") -> dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        asyncio.run(self.blobs.upload(namespace, digest, _chunks(data), 1 << 30))
        return {"sha256": digest, "size": len(data)}

    def push(self, name: str, version: str, files: dict[str, bytes], format: str = "csv",
             namespace: str = "default", **fields: Any) -> Any:
        entries = {relative: self.upload(data, namespace) for relative, data in files.items()}
        body = DatasetPushRequest(version=version, format=format, files=entries, **fields)
        return self.service.push(namespace, name, body)


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def iris_csv() -> bytes:
    bunch = load_iris(as_frame=True)
    frame = bunch.frame.copy()
    frame["species"] = [bunch.target_names[i] for i in bunch.target]
    return frame.to_csv(index=False).encode()


def test_a_split_reads_the_same_rows_every_time(harness: Harness) -> None:
    view, created = harness.push("iris", "1", {"iris.csv": iris_csv()},
                                 split={"train": 0.8, "test": 0.2}, seed=11)
    assert created and view["rows"] == 150 and view["ref"] == "iris@1"
    assert view["split"] == {"seed": 11, "fractions": {"train": 0.8, "test": 0.2},
                             "sizes": {"test": 30, "train": 120}}
    assert view["preview"]["rows"][0]["species"] == "setosa"
    assert len(view["preview"]["rows"]) == 20
    layout = json.loads(json.dumps(harness.service.resolve("default", "iris@1")))  # crosses JSON
    assert layout["ref"] == "iris@1" and layout["rows"] == 150 and layout["format"] == "csv"
    assert Path(layout["files"]["iris.csv"]["path"]).read_bytes() == iris_csv()
    train, test = open_split(layout, "train"), open_split(layout, "test")
    assert (train.num_rows, test.num_rows) == (120, 30)
    assert train.columns == [*FEATURES, "target", "species"]
    first = train.to_arrow()
    again = open_split(json.loads(json.dumps(layout)), "train").to_arrow()
    assert first.equals(again), "a second reader sees the same rows"
    whole = open_split(layout, None).to_pandas()
    both = pd.concat([train.to_pandas(), test.to_pandas()]).sort_values([*FEATURES, "species"])
    assert len(whole) == 150
    pd.testing.assert_frame_equal(both.reset_index(drop=True),
                                  whole.sort_values([*FEATURES, "species"]).reset_index(drop=True))
    harness.push("iris", "2", {"iris.csv": iris_csv()},
                 split={"train": 0.8, "test": 0.2}, seed=12)
    moved = open_split(harness.service.resolve("default", "iris@2"), "test").to_arrow()
    assert not moved.equals(test.to_arrow()), "another seed chooses other rows"


def test_to_torch_gives_float_features_and_class_indices(harness: Harness) -> None:
    harness.push("iris", "1", {"iris.csv": iris_csv()}, split={"train": 0.8, "test": 0.2})
    train = open_split(harness.service.resolve("default", "iris"), "train")
    dataset = train.to_torch(features=FEATURES, target="species")
    assert len(dataset) == 120 and dataset.classes == ["setosa", "versicolor", "virginica"]
    x, y = dataset[0]
    assert x.dtype == torch.float32 and x.shape == (4,) and y.dtype == torch.int64
    frame = train.to_pandas()
    np.testing.assert_allclose(dataset.tensors[0].numpy(), frame[FEATURES].to_numpy(), rtol=1e-6)
    labels = [dataset.classes[i] for i in dataset.tensors[1].tolist()]
    assert labels == frame["species"].tolist()
    with pytest.raises(BadRequest, match="feature column 'species' is string"):
        train.to_torch(target="target")  # the features default to every other column
    loader = torch.utils.data.DataLoader(train.to_torch(FEATURES, "target"), batch_size=32)
    batch_x, batch_y = next(iter(loader))
    assert batch_x.shape == (32, 4) and batch_y.tolist() == frame["target"].tolist()[:32]


def test_to_torch_refuses_text_features_nulls_and_unknown_columns(harness: Harness) -> None:
    harness.push("people", "1", {"p.csv": b"name,age,score\nann,30,1.5\nbob,,2.5\n"})
    split = open_split(harness.service.resolve("default", "people@1"), None)
    with pytest.raises(BadRequest, match="feature column 'name' is string"):
        split.to_torch(features=["name"])
    with pytest.raises(BadRequest, match="column 'age' has 1 null"):
        split.to_torch(features=["age"])
    with pytest.raises(BadRequest, match="no column 'height'"):
        split.to_torch(features=["height"])
    with pytest.raises(BadRequest, match="both a feature and the target"):
        split.to_torch(features=["score"], target="score")
    assert split.to_torch(features=["score"], target="name").classes == ["ann", "bob"]


def test_unknown_datasets_versions_and_splits_are_not_found(harness: Harness) -> None:
    harness.push("iris", "1", {"iris.csv": iris_csv()}, split={"train": 0.5, "test": 0.5})
    harness.push("plain", "1", {"x.csv": b"a\n1\n"})
    with pytest.raises(NotFound, match="dataset 'nope' not found"):
        harness.service.resolve("default", "nope@1")
    with pytest.raises(NotFound, match="dataset 'iris' has no version 9"):
        harness.service.resolve("default", "iris@9")
    with pytest.raises(NotFound, match="dataset 'iris' not found"):
        harness.service.resolve("other", "iris")  # another namespace's
    layout = harness.service.resolve("default", "iris@1")
    with pytest.raises(NotFound, match="no split 'valid'; its splits are test, train"):
        harness.service.check_split(layout, "valid")
    with pytest.raises(NotFound, match="no split 'valid'"):
        open_split(layout, "valid")
    with pytest.raises(NotFound, match="it has no splits"):
        open_split(harness.service.resolve("default", "plain"), "train")
    with pytest.raises(NotFound, match="no split 'valid'"):
        harness.service.preview("default", "iris", "1", "valid")


def test_versions_are_immutable_and_a_repeated_push_is_idempotent(harness: Harness) -> None:
    first, created = harness.push("d", "1", {"x.csv": b"a\n1\n"}, split={"all": 1.0}, seed=3)
    assert created
    again, created = harness.push("d", "1", {"x.csv": b"a\n1\n"}, split={"all": 1.0}, seed=3)
    assert not created and again == first
    for files, split, seed in (({"x.csv": b"a\n2\n"}, {"all": 1.0}, 3),
                               ({"y.csv": b"a\n1\n"}, {"all": 1.0}, 3),
                               ({"x.csv": b"a\n1\n"}, None, 3),
                               ({"x.csv": b"a\n1\n"}, {"all": 1.0}, 4)):
        with pytest.raises(Conflict, match="already exists with other content"):
            harness.push("d", "1", files, split=split, seed=seed)
    assert harness.push("d", "1", {"x.csv": b"a\n1\n"}, namespace="b")[1], "namespaces apart"


def test_push_refuses_missing_blobs_bad_files_and_bad_requests(harness: Harness) -> None:
    missing = {"x.csv": {"sha256": "ab" * 32, "size": 3}}
    with pytest.raises(NotFound, match=r"x\.csv: blob abababababab has not been uploaded"):
        harness.service.push("default", "d", DatasetPushRequest(version="1", format="csv",
                                                                files=missing))
    entry = harness.upload(b"a\n1\n")
    with pytest.raises(NotFound, match=rf"x\.csv: blob {entry['sha256'][:12]} has not been uploaded"):
        harness.service.push("other", "d", DatasetPushRequest(  # another namespace's blob
            version="1", format="csv", files={"x.csv": entry}))
    wrong_size = {"x.csv": {**entry, "size": 99}}
    with pytest.raises(BadRequest, match="holds 4 bytes, expected 99"):
        harness.service.push("default", "d", DatasetPushRequest(version="1", format="csv",
                                                                files=wrong_size))
    with pytest.raises(BadRequest, match=r"x\.csv: line 3: expected 2 columns, got 1"):
        harness.push("d", "1", {"x.csv": b"a,b\n1,2\n3\n"})
    with pytest.raises(BadRequest, match="sum to"):
        harness.push("d", "1", {"x.csv": b"a\n1\n"}, split={"train": 0.5})
    with pytest.raises(BadRequest, match="dataset name"):
        harness.push("D", "1", {"x.csv": b"a\n1\n"})
    with pytest.raises(BadRequest, match="format 'json'"):
        harness.push("d", "1", {"x.csv": b"a\n1\n"}, format="json")
    with pytest.raises(BadRequest, match="must be relative"):
        harness.push("d", "1", {"../x.csv": b"a\n1\n"})
    assert harness.service.store.versions("default", "d") == []


def digests(view: dict[str, Any]) -> set[str]:
    return {entry["sha256"] for entry in view["files"].values()}


def test_the_store_lists_latest_deletes_and_counts_digests(harness: Harness) -> None:
    one, _ = harness.push("d", "1", {"x.csv": b"a\n1\n"})
    two, _ = harness.push("d", "b", {"x.csv": b"a\n1\n2\n"})
    harness.push("e", "1", {"p/1.csv": b"a\n1\n", "p/2.csv": b"a\n3\n"})
    assert harness.service.find("default", "d").version == "b", "the latest is the last pushed"
    listed = harness.service.list_datasets("default")
    assert [(d["name"], d["latest"], d["versions"], d["rows"]) for d in listed] == [
        ("d", "b", 2, 2), ("e", "1", 1, 2)]
    assert [v["version"] for v in harness.service.show("default", "d")["versions"]] == ["1", "b"]
    store = harness.service.store
    assert store.all_digests() == digests(one) | digests(two) | {
        harness.upload(b"a\n1\n")["sha256"], harness.upload(b"a\n3\n")["sha256"]}
    assert harness.service.delete("default", "d", "b") == "d@b"
    assert harness.service.find("default", "d").version == "1"
    with pytest.raises(NotFound, match="has no version b"):
        harness.service.delete("default", "d", "b")
    assert harness.service.delete("default", "e", None) == "e"
    with pytest.raises(NotFound, match="dataset 'e' not found"):
        harness.service.delete("default", "e", None)
    with pytest.raises(NotFound, match="dataset 'e' not found"):
        harness.service.delete("default", "e", "1")
    assert store.all_digests() == digests(one)
    harness.push("d", "2", {"x.csv": b"a\n5\n"})
    assert harness.service.find("default", "d").version == "2"


def test_a_split_preview_is_that_splits_first_rows(harness: Harness) -> None:
    data = "n\n" + "".join(f"{i}\n" for i in range(100))
    harness.push("nums", "1", {"n.csv": data.encode()}, split={"train": 0.9, "test": 0.1}, seed=5)
    whole = harness.service.preview("default", "nums", "1")
    assert whole["preview"] == {"split": None, "rows": [{"n": i} for i in range(20)],
                                "split_rows": 100}
    assert whole["schema"] == {"columns": [{"name": "n", "type": "int64", "nulls": 0}]}
    test = harness.service.preview("default", "nums", "1", "test")
    expected = open_split(harness.service.resolve("default", "nums@1"), "test").to_pandas()
    assert test["preview"]["split"] == "test" and test["preview"]["split_rows"] == 10
    assert [row["n"] for row in test["preview"]["rows"]] == expected["n"].tolist()


@pytest.mark.parametrize("format", ["csv", "parquet"])
def test_previews_read_across_the_files_of_a_directory(harness: Harness, format: str,
                                                       tmp_path: Path) -> None:
    files = {}
    for part in range(3):
        frame = pd.DataFrame({"n": range(part * 10, part * 10 + 10), "half": [0.5] * 10})
        target = tmp_path / f"{part}.{format}"
        if format == "csv":
            frame.to_csv(target, index=False)
        else:
            frame.to_parquet(target, index=False, row_group_size=4)
        files[f"parts/{part}.{format}"] = target.read_bytes()
    view, _ = harness.push("parts", "1", files, format=format, split={"a": 0.5, "b": 0.5})
    assert view["rows"] == 30
    shown = harness.service.preview("default", "parts", "1")["preview"]["rows"]
    assert [row["n"] for row in shown] == list(range(20))
    layout = harness.service.resolve("default", "parts@1")
    for split in ("a", "b"):
        expected = open_split(layout, split).to_pandas()["n"].tolist()[:20]
        previewed = harness.service.preview("default", "parts", "1", split)["preview"]["rows"]
        assert [row["n"] for row in previewed] == expected


def test_a_tampered_blob_is_refused_at_push(harness: Harness) -> None:
    entry = harness.upload(b"a,b\n1,2\n" * 100)
    sealed = harness.artifacts.blob_path(entry["sha256"])
    data = bytearray(sealed.read_bytes())
    data[len(data) // 2] ^= 0xFF
    sealed.write_bytes(bytes(data))
    body = DatasetPushRequest(version="1", format="csv", files={"x.csv": entry})
    with pytest.raises(BadRequest, match=r"is corrupted.*fails its integrity check"):
        harness.service.push("default", "d", body)
    assert harness.service.store.versions("default", "d") == []
