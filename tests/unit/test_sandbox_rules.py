"""The sandbox's rules (config, uids, environment, limits) and, in real forked children, what
entering it does to a process."""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path
from typing import Any

import pytest

from forked import in_child
from stratus.runtime import sandbox
from stratus.runtime.cgroups import current_cgroups
from stratus.runtime.sandbox import (
    MB,
    Identity,
    ReplicaSandbox,
    SandboxConfig,
    SandboxError,
    ZygoteSandbox,
    address_space_budget,
    assign_uid,
    base_env,
    cgroup_memory_bytes,
    compose_env,
    drop_privileges,
    enter_replica,
    home_env,
    replica_rlimits,
    sandbox_config,
)


def test_config_defaults_and_validation() -> None:
    config = sandbox_config({})
    assert config == SandboxConfig()
    assert (config.nofile, config.cpu_seconds, config.pids, config.run_as) == (1024, 0, 512, "auto")
    assert sandbox_config({"nofile": 4096, "pass_env": ["HF_HOME"]}).pass_env == ("HF_HOME",)
    assert sandbox_config({"run_as": "shared", "shared_uid": 5000}).shared_uid == 5000
    for section, words in [
        ({"nofiles": 10}, "nofiles"),
        ({"nofile": 8}, "nofile"),
        ({"run_as": "nobody"}, "run_as"),
        ({"pass_env": ["STRATUS_ADMIN_KEY"]}, "never reach replicas"),
        ({"pass_env": ["not a name"]}, "not an environment variable name"),
        ({"group_id": 200001}, "group_id"),
        ({"shared_uid": 200001}, "shared_uid"),
        ({"shared_uid": 199999}, "shared_uid"),
    ]:
        with pytest.raises(ValueError, match=words):
            sandbox_config(section)


def test_uids_are_stable_and_never_shared() -> None:
    uids = range(1000, 1003)
    table = {"a": 1000, "c": 1002}
    assert assign_uid(table, "a", uids) == 1000
    assert assign_uid(table, "b", uids) == 1001
    with pytest.raises(SandboxError, match="no free uid"):
        assign_uid({**table, "b": 1001}, "d", uids)


def test_environment_keeps_nothing_of_the_server_but_neutral_variables() -> None:
    server = {"PATH": "/bin", "LANG": "C.UTF-8", "STRATUS_ADMIN_KEY": "sk-admin",
              "STRATUS_MASTER_KEY": "m", "AWS_SECRET_ACCESS_KEY": "s", "HF_HOME": "/hf",
              "HOME": "/root"}
    assert base_env(server) == {"PATH": "/bin", "LANG": "C.UTF-8"}
    assert base_env(server, ("HF_HOME",))["HF_HOME"] == "/hf"
    assert base_env({})["PATH"] == sandbox.DEFAULT_PATH
    home = home_env(base_env(server), "/w/r1", "stratus-a")
    assert home["HOME"] == home["TMPDIR"] == "/w/r1" and home["USER"] == "stratus-a"
    # The deployment's env wins over the base, its secrets over both.
    env = compose_env(home, {"PATH": "/opt/bin", "MODE": "env"}, {"MODE": "secret"})
    assert env["PATH"] == "/opt/bin" and env["MODE"] == "secret" and env["HOME"] == "/w/r1"


def test_limits() -> None:
    assert cgroup_memory_bytes(None, 64) is None
    assert cgroup_memory_bytes(256, 64) == 320 * MB
    assert address_space_budget(None, 10 * MB, 8) == 0
    small = address_space_budget(256, 0, 4)
    assert small > 256 * MB
    assert address_space_budget(256, 1024 * MB, 4) == small + 1024 * MB  # mapped weights
    assert address_space_budget(256, 0, 8) > small  # threads reserve address space
    config = SandboxConfig(cpu_seconds=30, nofile=2048)
    assert replica_rlimits(config, own_user=False, pids_cgroup=False) == {
        "CORE": (0, 0), "NOFILE": (2048, 2048), "CPU": (30, 35)}
    # RLIMIT_NPROC counts a user's processes: only for a namespace's own user, and only
    # when no pids cgroup caps the replica.
    assert "NPROC" not in replica_rlimits(SandboxConfig(), own_user=False, pids_cgroup=False)
    assert "NPROC" not in replica_rlimits(SandboxConfig(), own_user=True, pids_cgroup=True)
    assert replica_rlimits(SandboxConfig(), own_user=True, pids_cgroup=False)["NPROC"] == (4096,
                                                                                          4096)


def test_sandboxes_cross_the_wire_unchanged() -> None:
    replica = ReplicaSandbox("/w", {"A": "1"}, {"NOFILE": (64, 64)}, 5 * MB,
                             ("memory:/x/r",), 256)
    assert ReplicaSandbox.from_wire(json.loads(json.dumps(replica.to_wire()))) == replica
    zygote = ZygoteSandbox({"A": "1"}, Identity(200000, 200000, (199999,)), {"CORE": (0, 0)},
                           ("/data", "/dev/shm/stratus-0/x"))
    assert ZygoteSandbox.from_wire(json.loads(json.dumps(zygote.to_wire()))) == zygote
    assert ZygoteSandbox.from_wire(ZygoteSandbox({}).to_wire()).identity is None


def test_cgroup_lines() -> None:
    text = "4:memory:/jobs/a/r1\n8:pids:/stratus/r1\n1:cpu,cpuacct:/\n0::/\n"
    assert current_cgroups(text) == {"memory:/jobs/a/r1", "pids:/stratus/r1", "cpu,cpuacct:/",
                                     ":/"}


def test_entering_a_replica_sandbox(tmp_path: Path) -> None:
    box = ReplicaSandbox(str(tmp_path), {"PATH": "/bin", "HOME": str(tmp_path)},
                         {"CORE": (0, 0), "NOFILE": (128, 128)}, address_space=256 * MB,
                         memory_mb=64)

    def body() -> dict[str, Any]:
        enter_replica(box, {"GREETING": "hi"}, {"TOKEN": "t"})
        try:
            block = b"\x01" * (2048 * MB)
            refused = False
            del block
        except MemoryError:
            refused = True
        return {"cwd": os.getcwd(), "env": dict(os.environ), "refused": refused,
                "core": resource.getrlimit(resource.RLIMIT_CORE),
                "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
                "as": resource.getrlimit(resource.RLIMIT_AS)[0], "umask": os.umask(0)}

    seen = in_child(body)
    assert seen["cwd"] == str(tmp_path)
    assert seen["env"] == {"PATH": "/bin", "HOME": str(tmp_path), "GREETING": "hi", "TOKEN": "t"}
    assert seen["core"] == [0, 0] and seen["nofile"] == [128, 128]
    assert seen["refused"], "2 GB more than the address-space budget must be refused"
    assert 256 * MB < seen["as"] < 64 * 1024 * MB
    assert seen["umask"] == 0o077


def test_a_replica_that_is_never_placed_runs_nothing(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "PLACEMENT_TIMEOUT_S", 0.2)
    box = ReplicaSandbox(str(tmp_path), {}, cgroups=("memory:/never/there",))
    seen = in_child(lambda: enter_replica(box, {}, {}) or {"entered": True})
    assert "did not move the replica into its cgroups memory:/never/there" in seen["error"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can switch users")
def test_dropping_privileges_is_for_good() -> None:
    def body() -> dict[str, Any]:
        drop_privileges(Identity(200123, 200123, (199999,)))
        try:
            os.setuid(0)
            regained = True
        except PermissionError:
            regained = False
        import ctypes

        dumpable = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
        return {"ids": [os.getuid(), os.geteuid(), os.getgid()], "groups": os.getgroups(),
                "regained": regained, "dumpable": dumpable}

    seen = in_child(body)
    assert seen == {"ids": [200123, 200123, 200123], "groups": [199999], "regained": False,
                    "dumpable": 1}
