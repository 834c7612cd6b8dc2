"""The replica sandbox on a real server: memory, process, CPU, file and core limits, the
environment replicas get, their private working directories, and (as root) their
namespace's own users, by default (tests/integration/test_sandbox_identity.py has the rest)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server import TEST_ENV, StratusServer, wait_for
from stratus.runtime import messages
from stratus.runtime.cgroups import parse_hierarchies

PIDS, NOFILE, CPU_SECONDS = 64, 256, 3
CONFIG = f"sandbox:\n  pids: {PIDS}\n  nofile: {NOFILE}\n  cpu_seconds: {CPU_SECONDS}\n"


def _configured(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "stratus.yaml").write_text(CONFIG)
    return path


def in_namespace(server: StratusServer, namespace: str) -> StratusServer:
    server.http.headers["x-stratus-namespace"] = namespace
    return server


@pytest.fixture(scope="module")
def sandboxed() -> Iterator[StratusServer]:
    # Not under pytest's temporary directory: other pytest sessions reset its mode to 0700,
    # which would lock namespace users out of the data dir mid-test.
    base = Path(tempfile.mkdtemp(prefix="stratus-sandbox-"))
    base.chmod(0o711)
    instance = StratusServer(_configured(base / "data"), TEST_ENV)
    try:
        instance.start()
        yield instance
    finally:
        if instance.process is not None:
            instance.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def namespaced(sandboxed: StratusServer) -> StratusServer:
    """The server, which runs replicas as their namespaces' own users when it runs as root
    (Python under /root, mode 0700, included: runtime/reach.py shows it to them)."""
    if os.geteuid() != 0:
        pytest.skip("replicas run as the server's user here (it does not run as root)")
    sandboxed.deploy("sandbox", "app.py:Inspect", name="sb-whoami", max_replicas=1)
    assert _inspect(sandboxed, "sb-whoami")["uid"] != 0
    return sandboxed


def _inspect(server: StratusServer, name: str, **request: Any) -> dict[str, Any]:
    response = server.invoke(name, request)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def _error(response: Any, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == kind, error
    return error


def test_memory_hog_is_stopped_with_a_clear_error_and_others_keep_serving(
        sandboxed: StratusServer) -> None:
    sandboxed.deploy("basic", "app.py:Echo", name="sb-bystander", min_replicas=1, max_replicas=1)
    sandboxed.deploy("sandbox", "app.py:Hog", name="sb-hog", memory_mb=300, max_replicas=1)
    assert sandboxed.invoke("sb-hog", {"mb": 64}).status_code == 200
    bystander = sandboxed.wait_ready("sb-bystander")["replicas"]["items"][0]["pid"]

    for request in ({"mb": 4000}, {"mb": 6000, "at_once": True}):
        error = _error(sandboxed.invoke("sb-hog", request), 500, "out_of_memory")
        assert "memory limit" in error["message"] and "300 MB" in error["message"], error
        answer = sandboxed.invoke("sb-bystander", {"still": "here"})
        assert answer.status_code == 200 and answer.json()["pid"] == bystander

    assert sandboxed.http.get("/healthz").status_code == 200
    assert sandboxed.invoke("sb-hog", {"mb": 32}).status_code == 200  # replaced, or still whole
    exits = sandboxed.status("sb-hog")["replica_exits"]
    assert any(e["out_of_memory"] and "memory limit of 300 MB" in e["reason"] for e in exits), exits
    wait_for(lambda: "exceeded its memory limit of 300 MB" in sandboxed.log_tail(200), 10,
             "the server log to say why the replica ended")


def test_fork_bomb_is_contained_and_others_keep_serving(sandboxed: StratusServer) -> None:
    sandboxed.deploy("basic", "app.py:Echo", name="sb-calm", min_replicas=1, max_replicas=1)
    sandboxed.deploy("sandbox", "app.py:Forker", name="sb-forker", max_replicas=1)
    sandboxed.deploy("sandbox", "app.py:Inspect", name="sb-look", max_replicas=1)
    limited = "pids:" in _inspect(sandboxed, "sb-look")["cgroup"] or \
        _inspect(sandboxed, "sb-look")["rlimits"]["NPROC"][0] <= 4096
    # Without a pids cgroup or a namespace user nothing caps processes (docs/security.md):
    # then only a small, harmless number of forks is tried.
    attempts = 10_000 if limited else 200
    result = sandboxed.invoke("sb-forker", {"attempts": attempts, "hold": 5}, timeout=120)
    assert result.status_code == 200, result.text
    outcome = result.json()
    if limited:
        assert outcome["refused"] and outcome["forked"] < PIDS, outcome
    else:
        assert outcome["forked"] == attempts
    assert sandboxed.invoke("sb-calm", {}).status_code == 200
    assert sandboxed.invoke("sb-forker", {"ping": True}).json()["pid"] == outcome["pid"]
    assert sandboxed.http.get("/healthz").status_code == 200


def test_what_a_replica_left_running_goes_with_its_cgroups(sandboxed: StratusServer) -> None:
    sandboxed.deploy("sandbox", "app.py:Forker", name="sb-leaver", max_replicas=1)
    seen = sandboxed.invoke("sb-leaver", {"leave": 3})
    assert seen.status_code == 200, seen.text
    left, replica = seen.json()["left"], seen.json()["pid"]
    cgroups = parse_hierarchies(Path(f"/proc/{replica}/cgroup").read_text(),
                                Path("/proc/self/mountinfo").read_text())
    directories = [h.directory for h in cgroups if h.directory.parent.name.startswith("stratus-srv-")]
    if not directories:
        pytest.skip("replicas get no cgroups on this host")
    sandboxed.delete("sb-leaver")
    # The replica's children were killed with it; its cgroups go once they have exited.
    wait_for(lambda: not any(d.exists() for d in directories), 10,
             f"the replica's cgroups {directories} to be removed")
    assert not [pid for pid in left if _running(pid)]


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != b"Z"


def test_replica_sees_its_own_environment_and_no_server_secrets(sandboxed: StratusServer) -> None:
    sandboxed.deploy("sandbox", "app.py:Inspect", name="sb-env", max_replicas=1,
                     env={"GREETING": "hello", "MODEL_SIZE": "small"})
    seen = _inspect(sandboxed, "sb-env")
    env = seen["env"]
    assert env["GREETING"] == "hello" and env["MODEL_SIZE"] == "small"
    assert not [name for name in env if name.startswith("STRATUS_")], sorted(env)
    assert sandboxed.key not in json.dumps(env)
    assert env["HOME"] == env["TMPDIR"] == seen["cwd"]
    assert "PATH" in env
    # What the server itself was given stays with it.
    server_only = set(sandboxed.env) - set(env) - {"PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH"}
    assert "STRATUS_ADMIN_KEY" in server_only


def test_replica_runs_under_its_rlimits(sandboxed: StratusServer) -> None:
    sandboxed.deploy("sandbox", "app.py:Inspect", name="sb-limits", max_replicas=1,
                     memory_mb=512)
    seen = _inspect(sandboxed, "sb-limits")
    limits = seen["rlimits"]
    assert limits["CORE"] == [0, 0]
    assert limits["NOFILE"] == [NOFILE, NOFILE]
    assert limits["CPU"] == [CPU_SECONDS, CPU_SECONDS + 5]
    if "memory:" not in seen["cgroup"]:  # no memory cgroup: the address space is capped
        assert 512 << 20 < limits["AS"][0] < 8 << 30, limits["AS"]


def test_replica_over_its_cpu_time_is_ended_with_the_reason(sandboxed: StratusServer) -> None:
    sandboxed.deploy("sandbox", "app.py:Spinner", name="sb-spin", max_replicas=1)
    error = _error(sandboxed.invoke("sb-spin", {"seconds": 30}, timeout=60), 502,
                   "replica_failed")
    assert f"CPU time limit of {CPU_SECONDS}s" in error["message"]
    after = sandboxed.invoke("sb-spin", {"seconds": 0})
    assert after.status_code == 200, after.text


def test_each_replica_works_in_its_own_directory(sandboxed: StratusServer) -> None:
    for namespace in ("sb-team-a", "sb-team-b"):
        in_namespace(sandboxed, namespace).deploy("sandbox", "app.py:Inspect", name="sb-dir",
                                                  max_replicas=1)
    try:
        a = _inspect(in_namespace(sandboxed, "sb-team-a"), "sb-dir")
        b = _inspect(in_namespace(sandboxed, "sb-team-b"), "sb-dir")
    finally:
        sandboxed.http.headers.pop("x-stratus-namespace")
    for seen, namespace in ((a, "sb-team-a"), (b, "sb-team-b")):
        workdir = Path(seen["cwd"])
        assert workdir.parent.parent.name == namespace, workdir
        assert seen["cwd_mode"] == "0o700"
        assert seen["sees_app"]  # the bundle's files, by their names
        assert (workdir / "scratch.txt").read_text() == "mine"
    assert a["cwd"] != b["cwd"]


def test_namespaces_run_as_their_own_users(namespaced: StratusServer) -> None:
    seen = {}
    for namespace in ("ns-a", "ns-b"):
        in_namespace(namespaced, namespace).deploy("sandbox", "app.py:Inspect", name="who",
                                                   min_replicas=1, max_replicas=1)
        seen[namespace] = _inspect(namespaced, "who")
    namespaced.http.headers.pop("x-stratus-namespace")
    a, b = seen["ns-a"], seen["ns-b"]
    assert a["uid"] != b["uid"] and 0 not in (a["uid"], b["uid"])
    assert a["imported_as"] == a["uid"]  # the zygote imported the code as that user too
    assert a["groups"] == b["groups"] and len(a["groups"]) == 1

    data = namespaced.data_dir
    in_namespace(namespaced, "ns-a")
    probe = _inspect(namespaced, "who", signal=b["pid"], probe=[
        str(data), str(data / "stratus.db"), str(data / "master.key"), str(data / "admin.key"),
        str(data / "logs"), b["cwd"], str(Path(b["cwd"]).parent.parent)])
    namespaced.http.headers.pop("x-stratus-namespace")
    assert set(probe["probes"].values()) <= {"EACCES", "ENOENT"}, probe["probes"]
    assert probe["signal"] == "EPERM"  # cannot signal another namespace's replica


def test_a_replica_cannot_speak_for_another_process(namespaced: StratusServer) -> None:
    in_namespace(namespaced, "ns-c").deploy("sandbox", "app.py:Inspect", name="liar",
                                            max_replicas=1)
    namespaced.http.headers.pop("x-stratus-namespace")
    namespaced.deploy("basic", "app.py:Echo", name="victim", min_replicas=1, max_replicas=1)
    victim = namespaced.wait_ready("victim")["replicas"]["items"][0]
    socket_path = str(namespaced.data_dir / "run" / "stratus.sock")
    forged = {
        "profile": [messages.HELLO_PROFILE, "default", 1, {}],
        "replica": [messages.HELLO_REPLICA, victim["id"], victim["pid"], True, 1.0, None],
    }
    in_namespace(namespaced, "ns-c")
    for hello in forged.values():
        outcome = _inspect(namespaced, "liar", socket=socket_path, hello=hello)["hello"]
        assert outcome == "closed" or outcome.startswith("cannot connect"), outcome
    namespaced.http.headers.pop("x-stratus-namespace")
    answer = namespaced.invoke("victim", {"after": "forgery"})
    assert answer.status_code == 200 and answer.json()["pid"] == victim["pid"]
    # The profile zygote still serves: a new bundle still deploys and runs.
    namespaced.deploy("sandbox", "app.py:Hog", name="after-forgery", max_replicas=1)
    assert namespaced.invoke("after-forgery", {"ping": True}).status_code == 200
