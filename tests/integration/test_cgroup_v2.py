"""The sandbox's cgroup v2 paths against a real kernel's cgroup2 with the memory and pids
controllers. Hosts with v1 (or hybrid) cgroups cannot give the tests that, so a guest kernel
booted with cgroup v2 alone (tests/vm/guest.py) runs tests/vm/cgroup_v2_checks.py, and each of
its checks is a test here. ``make test-vm`` adds a whole server in that guest."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vm import cgroup_v2_checks, guest

ROOT = Path(__file__).resolve().parents[2]
CHECKS = [check.__name__ for check in cgroup_v2_checks.CHECKS]


@dataclass
class Guest:
    results: dict[str, dict[str, Any]]
    run: guest.GuestRun


def boot(command: list[str], timeout: float, cpus: int) -> guest.GuestRun:
    tools, reason = guest.find_tools()
    if tools is None:
        pytest.skip(f"no guest kernel can be booted here for cgroup v2: {reason}")
    return guest.run(command, cwd=str(ROOT), env=guest.guest_env(ROOT / "src"), timeout=timeout,
                     cpus=cpus, tools=tools)


@pytest.fixture(scope="module")
def v2_guest() -> Guest:
    run = boot([sys.executable, str(Path(cgroup_v2_checks.__file__))], timeout=150, cpus=1)
    results = {}
    for line in run.output.splitlines():
        if line.startswith(cgroup_v2_checks.RESULT):
            result = json.loads(line[len(cgroup_v2_checks.RESULT):])
            results[result["check"]] = result
    return Guest(results, run)


@pytest.mark.parametrize("check", CHECKS)
def test_cgroup_v2_on_a_real_kernel(v2_guest: Guest, check: str) -> None:
    result = v2_guest.results.get(check)
    assert result is not None, f"the guest did not run {check}\n{v2_guest.run.report()}"
    assert result["ok"], f"{check} failed in the guest:\n{result['detail']}"


@pytest.mark.skipif(os.environ.get("STRATUS_VM_LONG") != "1",
                    reason="a whole server in an emulated guest takes minutes: `make test-vm`")
def test_a_server_on_cgroup_v2_names_out_of_memory() -> None:
    script = ROOT / "tests" / "vm" / "server_oom_check.py"
    run = boot([sys.executable, str(script)], timeout=1100, cpus=2)
    print(run.report())  # `make test-vm` shows it (-s): what the server and the kernel said
    assert run.returncode == 0, run.report()
    assert "stratus-server-check ok" in run.output, run.report()
