"""A tenant cannot choose what the server's user imports: a deploy, a patch or a job whose
``preload`` names a package outside the operator's ``STRATUS_PRELOAD_ALLOW`` list is a 400
before any zygote starts; the setting widens the list; a revision recorded under a wider
list does not load after the operator narrows it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server import TEST_ENV, StratusServer, children

ECHO = "app.py:Echo"
# A standard-library package: harmless to import, and in no default list.
OUTSIDE = "json"


def zygote_preloads(server: StratusServer) -> list[str]:
    """The ``--preload`` argument of every profile zygote the server started."""
    assert server.process is not None
    found = []
    for pid in children(server.process.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:  # gone meanwhile
            continue
        if "stratus.runtime.zygote" in argv:
            found.append(argv[argv.index("--preload") + 1])
    return found


def assert_refused(response: httpx.Response, module: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    assert f"preload {module!r} is not allowed" in error["message"]
    assert "STRATUS_PRELOAD_ALLOW" in error["message"]


@pytest.fixture(scope="module")
def preload_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StratusServer]:
    instance = StratusServer(tmp_path_factory.mktemp("preload"), TEST_ENV)
    instance.start()
    yield instance
    instance.stop()


def test_a_deploy_naming_a_module_outside_the_list_is_a_400_before_any_zygote(
        preload_server: StratusServer) -> None:
    server = preload_server
    for preload in ([OUTSIDE], ["torch", "subprocess"], ["numpy.__main__"]):
        response = server.deploy_raw("basic", ECHO, name="pl-refused", preload=preload)
        assert_refused(response, preload[-1])
    assert server.http.get("/api/deployments/pl-refused").status_code == 404
    assert not any(OUTSIDE in preloads.split(",") for preloads in zygote_preloads(server))


def test_an_allowed_preload_still_deploys_and_serves(preload_server: StratusServer) -> None:
    server = preload_server
    server.deploy("basic", ECHO, name="pl-numpy", preload=["numpy.linalg"], min_replicas=0)
    response = server.invoke("pl-numpy", {"x": 1})
    assert response.status_code == 200, response.text
    assert "numpy.linalg" in zygote_preloads(server)


def test_a_patch_cannot_add_one_either(preload_server: StratusServer) -> None:
    server = preload_server
    server.deploy("basic", ECHO, name="pl-patched", min_replicas=0)
    response = server.http.patch("/api/deployments/pl-patched", json={"preload": [OUTSIDE]})
    assert_refused(response, OUTSIDE)
    revisions = server.http.get("/api/deployments/pl-patched/revisions").json()["revisions"]
    assert [r["revision"] for r in revisions] == [1]


def test_nor_a_job(preload_server: StratusServer) -> None:
    server = preload_server
    body = {"code": {"bundle": server.upload("jobs"), "entrypoint": "train.py:train_mlp"},
            "preload": ["torch", OUTSIDE]}
    assert_refused(server.http.post("/api/jobs", json=body), OUTSIDE)
    assert server.http.get("/api/jobs").json()["jobs"] == []


def test_the_setting_widens_the_list_and_narrowing_it_stops_what_it_allowed(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    wide = StratusServer(data, {**TEST_ENV, "STRATUS_PRELOAD_ALLOW": f"default,{OUTSIDE}"})
    wide.start()
    try:
        wide.deploy("basic", ECHO, name="pl-wide", preload=[OUTSIDE, "numpy"], min_replicas=0)
        assert wide.invoke("pl-wide", {"x": 1}).status_code == 200
        assert f"{OUTSIDE},numpy" in zygote_preloads(wide)
    finally:
        wide.stop()

    narrow = StratusServer(data, TEST_ENV)  # back to the default list
    narrow.start()
    try:
        response = narrow.invoke("pl-wide", {"x": 1})
        assert response.status_code == 503, response.text
        message = response.json()["error"]["message"]
        assert f"preload {OUTSIDE!r} is not allowed" in message, message
        assert not any(OUTSIDE in preloads.split(",") for preloads in zygote_preloads(narrow))
    finally:
        narrow.stop()
