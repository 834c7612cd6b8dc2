"""Datasets on a real server: CSV (scikit-learn's iris), Parquet and directories pushed through
the CLI and the API; schemas, rows, nulls and seeded splits; the job-side reader in separate
processes; malformed files, unknown names, oversized uploads; namespaces and roles; encryption
at rest; and garbage collection that keeps what datasets reference."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from sklearn.datasets import load_iris

from server import TEST_ENV, StratusServer
from stratus.datasets.service import DatasetService
from stratus.security.masterkey import load_keyring
from stratus.store.artifacts import ArtifactStore
from stratus.store.blobs import NamespaceBlobs
from stratus.store.datasets import DatasetStore
from stratus.store.db import make_engine, sqlite_url
from stratus.store.owners import BlobOwners
from stratus.store.plaincache import PlainCache, cache_root

BLOB_LIMIT = 256 * 1024
FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StratusServer]:
    """A server of its own: a small blob limit, and a collector that may run with no grace."""
    instance = StratusServer(tmp_path_factory.mktemp("datasets"),
                             {**TEST_ENV, "STRATUS_MAX_BLOB_BYTES": str(BLOB_LIMIT)})
    instance.start()
    yield instance
    instance.stop()


def iris_frame() -> pd.DataFrame:
    bunch = load_iris(as_frame=True)
    frame = bunch.frame.copy()
    frame["species"] = [str(bunch.target_names[i]) for i in bunch.target]
    return frame


def flat(text: str) -> str:
    """The CLI's output without rich's wrapping and table borders."""
    return " ".join(re.sub("[\u2500-\u257f]", " ", text).split())


def upload(client: httpx.Client, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    response = client.put(f"/api/blobs/{digest}", content=data)
    assert response.status_code in (200, 201), response.text
    return {"sha256": digest, "size": len(data)}


def push(client: httpx.Client, name: str, version: str, files: dict[str, bytes],
         **fields: Any) -> httpx.Response:
    entries = {relative: upload(client, data) for relative, data in files.items()}
    body = {"version": version, "format": "csv", "files": entries, **fields}
    return client.post(f"/api/datasets/{name}/versions", json=body)


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def blob_file(server: StratusServer, digest: str) -> Path:
    return server.data_dir / "artifacts" / "blobs" / "sha256" / digest[:2] / digest


def service_beside(server: StratusServer, cache: Path) -> DatasetService:
    """The server's datasets as a job's launcher sees them: its database and sealed blobs,
    opened with its master key, decrypted into a cache of this test's own."""
    plain = PlainCache(cache)
    plain.open()
    artifacts = ArtifactStore(server.data_dir / "artifacts",
                              load_keyring(server.data_dir, environ={}), plain)
    engine = make_engine(sqlite_url(server.data_dir))
    return DatasetService(DatasetStore(engine), NamespaceBlobs(artifacts, BlobOwners(engine)))


READ_SPLIT = """
import json, sys
from stratus.datasets.reader import open_split
layout = json.loads(sys.stdin.read())
split = open_split(layout, sys.argv[1])
print(json.dumps(split.to_pandas().to_dict(orient="records")))
"""


def read_in_a_process(layout: dict[str, Any], split: str) -> list[dict[str, Any]]:
    result = subprocess.run([sys.executable, "-c", READ_SPLIT, split], input=json.dumps(layout),
                            capture_output=True, text=True, timeout=120, check=True)
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


# -- CSV through the CLI ----------------------------------------------------------------------
def test_iris_pushed_shown_and_split_through_the_cli(server: StratusServer, tmp_path: Path) -> None:
    frame = iris_frame()
    frame.loc[[5, 77], "petal width (cm)"] = None
    path = tmp_path / "iris.csv"
    frame.to_csv(path, index=False)
    pushed = server.cli("datasets", "push", "iris", str(path), "--version", "1",
                        "--split", "train=0.8,test=0.2", "--seed", "7")
    assert "uploaded iris.csv" in flat(pushed.stderr)
    assert "pushed iris@1 (csv, 150 rows, 6 columns; splits test=30, train=120)" in flat(pushed.stderr)
    again = server.cli("datasets", "push", "iris", str(path), "--version", "1",
                       "--split", "train=0.8,test=0.2", "--seed", "7")
    assert "already pushed with this content: iris@1" in flat(again.stderr)
    changed = server.cli("datasets", "push", "iris", str(path), "--version", "1",
                         "--split", "train=0.8,test=0.2", "--seed", "8", check=False)
    assert changed.returncode != 0 and "conflict (409)" in flat(changed.stderr)
    assert "versions are immutable" in flat(changed.stderr)

    listed = server.cli("datasets", "ls").stdout
    row = next(line for line in listed.splitlines() if "iris" in line)
    assert flat(row) == "iris 1 1 csv 150 6"
    detail = json.loads(server.cli("datasets", "show", "iris@1", "--json").stdout)
    assert detail["rows"] == 150 and detail["format"] == "csv"
    assert detail["schema"]["columns"] == [
        {"name": "sepal length (cm)", "type": "double", "nulls": 0},
        {"name": "sepal width (cm)", "type": "double", "nulls": 0},
        {"name": "petal length (cm)", "type": "double", "nulls": 0},
        {"name": "petal width (cm)", "type": "double", "nulls": 2},
        {"name": "target", "type": "int64", "nulls": 0},
        {"name": "species", "type": "string", "nulls": 0}]
    assert detail["split"] == {"seed": 7, "fractions": {"train": 0.8, "test": 0.2},
                               "sizes": {"test": 30, "train": 120}}
    assert detail["preview"]["rows"][0] == {**frame.iloc[0].to_dict(), "target": 0}
    assert len(detail["preview"]["rows"]) == 20 and detail["preview"]["split_rows"] == 150
    shown = flat(server.cli("datasets", "show", "iris@1").stdout)
    assert "iris@1: csv, 150 rows" in shown and "splits: test=30, train=120 (seed 7)" in shown
    assert "petal width (cm) double 2" in shown and "first rows" in shown
    versions = server.cli("datasets", "show", "iris").stdout
    assert "test=30, train=120 (seed 7)" in flat(versions)
    test_rows = json.loads(server.cli("datasets", "show", "iris@1", "--split", "test",
                                      "--json").stdout)["preview"]
    assert test_rows["split"] == "test" and test_rows["split_rows"] == 30
    assert "first rows of test" in server.cli("datasets", "show", "iris@1", "--split", "test").stdout


def test_the_reader_sees_the_same_split_rows_in_every_process(server: StratusServer,
                                                               tmp_path: Path) -> None:
    frame = iris_frame()
    data = frame.to_csv(index=False).encode()
    response = push(server.http, "iris-read", "1", {"iris.csv": data},
                    split={"train": 0.7, "valid": 0.1, "test": 0.2}, seed=42)
    assert response.status_code == 201, response.text
    layout = service_beside(server, tmp_path / "plain").resolve("default", "iris-read@1")
    first = {split: read_in_a_process(layout, split) for split in ("train", "valid", "test")}
    assert {split: len(rows) for split, rows in first.items()} == {"train": 105, "valid": 15,
                                                                  "test": 30}
    assert read_in_a_process(layout, "train") == first["train"], "the same rows a second time"
    everything = sorted(json.dumps(row, sort_keys=True) for rows in first.values() for row in rows)
    assert everything == sorted(json.dumps(row, sort_keys=True)
                                for row in json.loads(frame.to_json(orient="records")))
    previewed = server.http.get("/api/datasets/iris-read/versions/1", params={"split": "valid"})
    assert previewed.json()["preview"]["rows"] == first["valid"], "the server's split is the reader's"
    other = push(server.http, "iris-read", "2", {"iris.csv": data},
                 split={"train": 0.7, "valid": 0.1, "test": 0.2}, seed=43)
    moved = service_beside(server, tmp_path / "plain2").resolve("default", "iris-read@2")
    assert other.status_code == 201 and read_in_a_process(moved, "valid") != first["valid"]


# -- Parquet and directories --------------------------------------------------------------------
def test_a_parquet_file_and_a_directory_of_csv_parts(server: StratusServer, tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": [1.5, None, 3.5, 4.0], "label": ["a", "b", None, "a"],
                          "when": pd.to_datetime(["2024-01-01", None, "2024-01-03", "2024-01-04"])})
    parquet = tmp_path / "data.parquet"
    frame.to_parquet(parquet, index=False)
    pushed = server.cli("datasets", "push", "events", str(parquet), "--version", "2024-06")
    assert "pushed events@2024-06 (parquet, 4 rows, 3 columns)" in flat(pushed.stderr)
    view = server.http.get("/api/datasets/events/versions/2024-06").json()
    assert [(c["name"], c["type"], c["nulls"]) for c in view["schema"]["columns"]] == [
        ("x", "double", 1), ("label", "large_string", 1), ("when", "timestamp[us]", 1)]
    assert view["preview"]["rows"][0] == {"x": 1.5, "label": "a", "when": "2024-01-01T00:00:00"}
    assert view["preview"]["rows"][1] == {"x": None, "label": "b", "when": None}

    parts = tmp_path / "parts"
    (parts / "day=2").mkdir(parents=True)
    (parts / "day=1.csv").write_text("id,score\n1,10\n2,20\n")
    (parts / "day=2" / "a.csv").write_text("id,score\n3,2.5\n")
    (parts / "_SUCCESS").write_text("")  # a marker, not data
    (parts / ".hidden.csv").write_text("not,data\n")
    pushed = server.cli("datasets", "push", "scores", str(parts), "--version", "1")
    assert "pushed scores@1 (csv, 3 rows, 2 columns)" in flat(pushed.stderr)
    view = server.http.get("/api/datasets/scores/versions/1").json()
    assert sorted(view["files"]) == ["day=1.csv", "day=2/a.csv"]
    assert view["schema"]["columns"] == [{"name": "id", "type": "int64", "nulls": 0},
                                         {"name": "score", "type": "double", "nulls": 0}]
    assert view["preview"]["rows"] == [{"id": 1, "score": 10.0}, {"id": 2, "score": 20.0},
                                       {"id": 3, "score": 2.5}]
    (parts / "day=3.csv").write_text("id,name\n4,x\n")
    refused = server.cli("datasets", "push", "scores", str(parts), "--version", "2", check=False)
    assert refused.returncode != 0 and "do not share one schema" in flat(refused.stderr)
    (parts / "extra.parquet").write_bytes(parquet.read_bytes())
    mixed = server.cli("datasets", "push", "scores", str(parts), "--version", "3", check=False)
    assert mixed.returncode != 0 and "mixes formats (csv, parquet)" in flat(mixed.stderr)


# -- bad input --------------------------------------------------------------------------------
def test_a_malformed_csv_is_a_400_naming_the_line(server: StratusServer, tmp_path: Path) -> None:
    data = b"a,b,c\n1,2,3\n4,5,6\n\n7,8\n"
    response = push(server.http, "broken", "1", {"broken.csv": data})
    assert response.status_code == 400
    assert error_of(response) == {**error_of(response), "type": "invalid_request"}
    assert error_of(response)["message"] == "broken.csv: line 5: expected 3 columns, got 2: 7,8"
    path = tmp_path / "broken.csv"
    path.write_bytes(data)
    cli = server.cli("datasets", "push", "broken", str(path), "--version", "1", check=False)
    assert cli.returncode != 0 and "broken.csv: line 5: expected 3 columns" in flat(cli.stderr)
    assert server.http.get("/api/datasets/broken").status_code == 404, "nothing was recorded"
    for split, message in (({"train": 0.8, "test": 0.3}, "sum to 1.1, not 1"),
                           ({"train": 0.8, "test": -0.2}, "must be positive"),
                           ({"train": 1.0, "bad-name": 0.0}, "must be an identifier")):
        bad = push(server.http, "broken", "1", {"ok.csv": b"a\n1\n"}, split=split)
        assert bad.status_code == 400 and message in error_of(bad)["message"], bad.text
    bad_cli = server.cli("datasets", "push", "broken", str(path), "--version", "1",
                         "--split", "train=0.8,test=0.1", check=False)
    assert bad_cli.returncode != 0 and "sum to 0.9, not 1" in flat(bad_cli.stderr)
    unknown_blob = server.http.post("/api/datasets/broken/versions", json={
        "version": "1", "format": "csv", "files": {"x.csv": {"sha256": "ab" * 32, "size": 1}}})
    assert unknown_blob.status_code == 404 and "has not been uploaded" in unknown_blob.text


def test_unknown_datasets_versions_and_splits_are_404(server: StratusServer) -> None:
    assert push(server.http, "known", "1", {"k.csv": b"a\n1\n2\n"},
                split={"train": 0.5, "test": 0.5}).status_code == 201
    for path, message in (("/api/datasets/nothing", "dataset 'nothing' not found"),
                          ("/api/datasets/nothing/versions/1", "dataset 'nothing' not found"),
                          ("/api/datasets/known/versions/9", "dataset 'known' has no version 9")):
        response = server.http.get(path)
        assert response.status_code == 404 and error_of(response)["message"] == message
        assert error_of(response)["type"] == "not_found"
    split = server.http.get("/api/datasets/known/versions/1", params={"split": "valid"})
    assert split.status_code == 404
    assert error_of(split)["message"] == ("dataset known@1 has no split 'valid'; its splits are "
                                          "test, train")
    cli = server.cli("datasets", "show", "known@1", "--split", "valid", check=False)
    assert cli.returncode != 0 and "not_found (404)" in flat(cli.stderr)
    assert server.http.delete("/api/datasets/known/versions/9").status_code == 404
    assert server.http.delete("/api/datasets/nothing").status_code == 404
    assert server.http.get("/api/datasets/Bad_Name/versions/1").status_code == 400


def test_an_oversized_upload_is_a_413(server: StratusServer, tmp_path: Path) -> None:
    data = b"n\n" + b"1234567\n" * (BLOB_LIMIT // 8 + 10)
    digest = hashlib.sha256(data).hexdigest()
    response = server.http.put(f"/api/blobs/{digest}", content=data)
    assert response.status_code == 413 and error_of(response)["type"] == "payload_too_large"
    assert server.http.head(f"/api/blobs/{digest}").status_code == 404
    path = tmp_path / "big.csv"
    path.write_bytes(data)
    cli = server.cli("datasets", "push", "big", str(path), "--version", "1", check=False)
    assert cli.returncode != 0 and "payload_too_large (413)" in flat(cli.stderr)


# -- namespaces and roles -----------------------------------------------------------------------
def test_namespaces_hide_datasets_and_invokers_cannot_push(server: StratusServer) -> None:
    a = server.client_as(server.mint_key("team-a", "developer")[1])
    b = server.client_as(server.mint_key("team-b", "developer")[1])
    invoker = server.client_as(server.mint_key("team-a", "invoker")[1])
    viewer = server.client_as(server.mint_key("team-a", "viewer")[1])
    assert push(a, "private", "1", {"p.csv": b"secret,value\nx,1\n"},
                split={"all": 1.0}).status_code == 201
    assert [d["name"] for d in a.get("/api/datasets").json()["datasets"]] == ["private"]
    assert b.get("/api/datasets").json() == {"datasets": []}
    for path in ("/api/datasets/private", "/api/datasets/private/versions/1"):
        assert b.get(path).status_code == 404, path
        assert viewer.get(path).status_code == 200, path
    assert b.delete("/api/datasets/private").status_code == 404
    assert b.delete("/api/datasets/private/versions/1").status_code == 404
    # B may push the same name in its own namespace, with other content.
    assert push(b, "private", "1", {"p.csv": b"other\n2\n"}).status_code == 201
    assert a.get("/api/datasets/private/versions/1").json()["rows"] == 1
    assert a.get("/api/datasets/private/versions/1").json()["schema"]["columns"][0]["name"] == "secret"

    entry = upload(a, b"a\n1\n")
    refused = invoker.post("/api/datasets/mine/versions",
                           json={"version": "1", "format": "csv", "files": {"x.csv": entry}})
    assert refused.status_code == 403 and error_of(refused)["type"] == "forbidden"
    assert invoker.put(f"/api/blobs/{'0' * 64}", content=b"x").status_code == 403
    assert invoker.get("/api/datasets").status_code == 403
    assert viewer.post("/api/datasets/mine/versions", json={
        "version": "1", "format": "csv", "files": {"x.csv": entry}}).status_code == 403
    assert viewer.delete("/api/datasets/private").status_code == 403
    assert a.delete("/api/datasets/private/versions/1").json() == {"deleted": "private@1"}
    assert a.get("/api/datasets/private").status_code == 404
    assert b.get("/api/datasets/private/versions/1").status_code == 200, "B's own is untouched"


# -- at rest and garbage collection ---------------------------------------------------------------
def test_dataset_blobs_are_sealed_and_kept_by_the_collector(server: StratusServer,
                                                              tmp_path: Path) -> None:
    marker = "row-marker-5f3a9c"
    data = ("name,value\n" + "".join(f"{marker}-{i},{i}\n" for i in range(50))).encode()
    response = push(server.http, "sealed", "1", {"s.csv": data}, split={"a": 0.5, "b": 0.5})
    assert response.status_code == 201, response.text
    digest = response.json()["files"]["s.csv"]["sha256"]
    sealed = blob_file(server, digest)
    assert sealed.is_file() and marker.encode() not in sealed.read_bytes()
    assert response.json()["preview"]["rows"][0] == {"name": f"{marker}-0", "value": 0}
    # Not the database either: no row is kept there. The one plaintext is the decrypted copy
    # the preview read, in the plaintext cache (run/plain), which goes with the server.
    cache = cache_root(server.data_dir)
    for path in server.data_dir.rglob("*"):
        if path.is_file() and not path.is_symlink() and not path.is_relative_to(cache):
            assert marker.encode() not in path.read_bytes(), path
    assert marker.encode() in (cache / "blobs" / digest).read_bytes()

    orphan = upload(server.http, b"orphan,blob\n1,2\n")["sha256"]
    collected = server.cli("gc", "--grace", "0")
    assert "removed" in collected.stderr
    assert not blob_file(server, orphan).exists(), "an unreferenced blob goes"
    assert sealed.is_file(), "a dataset's blob stays"
    again = server.http.get("/api/datasets/sealed/versions/1", params={"split": "b"})
    assert again.status_code == 200 and len(again.json()["preview"]["rows"]) == 20
    layout = service_beside(server, tmp_path / "plain").resolve("default", "sealed@1")
    assert len(read_in_a_process(layout, "a")) == 25

    server.cli("datasets", "rm", "sealed@1")
    assert server.http.get("/api/datasets/sealed").status_code == 404
    server.cli("gc", "--grace", "0")
    assert not sealed.exists(), "once no version references it, it goes too"
