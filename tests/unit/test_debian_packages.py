"""tools/debian-packages.sh, which `make test` and the bench targets use to install Debian
packages: nothing when the commands are there, and on a fresh machine with empty or stale
package lists, one `apt-get update` before the install succeeds. apt-get itself is replaced
by a recording script (the one fault injected: a real update and install would change the
machine and need the network)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "debian-packages.sh"
MISSING = "stratus-no-such-command"

FAKE_APT = """#!/usr/bin/env bash
echo "$*" >> "$LOG"
case "$1" in
    update) touch "$STATE/updated" ;;
    install) [ -e "$STATE/updated" ] || { echo "E: Unable to locate package" >&2; exit 100; } ;;
esac
"""


def run(tmp_path: Path, *specs: str, lists: bool,
        fake_apt: str = FAKE_APT) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir, state, lists_dir = tmp_path / "bin", tmp_path / "state", tmp_path / "lists"
    for directory in (bin_dir, state, lists_dir):
        directory.mkdir(exist_ok=True)
    fake = bin_dir / "apt-get"
    fake.write_text(fake_apt)
    fake.chmod(0o755)
    if lists:  # lists a previous update left, which may be stale
        (lists_dir / "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages").touch()
    log = tmp_path / "apt.log"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(log),
           "STATE": str(state), "APT_LISTS_DIR": str(lists_dir)}
    result = subprocess.run(["bash", str(SCRIPT), *specs], env=env, capture_output=True,
                            text=True, timeout=30)
    return result, log.read_text().splitlines() if log.exists() else []


@pytest.fixture(autouse=True)
def _as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the script installs only as root; the suite runs as root here")


def test_nothing_is_installed_when_every_command_is_there(tmp_path: Path) -> None:
    result, calls = run(tmp_path, "bash", "sh:dash", lists=False)
    assert result.returncode == 0, result.stderr
    assert calls == []


def test_empty_package_lists_are_updated_before_the_install(tmp_path: Path) -> None:
    result, calls = run(tmp_path, "bash", f"{MISSING}:the-package", lists=False)
    assert result.returncode == 0, result.stderr
    assert calls == ["update", "install -y --no-install-recommends the-package"]


def test_stale_package_lists_are_updated_once_after_a_failed_install(tmp_path: Path) -> None:
    result, calls = run(tmp_path, MISSING, lists=True)
    assert result.returncode == 0, result.stderr
    install = f"install -y --no-install-recommends {MISSING}"
    assert calls == [install, "update", install]
    assert "updating the package lists" in result.stderr


def test_a_package_that_cannot_be_had_fails_after_one_update(tmp_path: Path) -> None:
    never = FAKE_APT.replace('touch "$STATE/updated"', "true")  # the lists never know it
    result, calls = run(tmp_path, MISSING, lists=True, fake_apt=never)
    assert result.returncode != 0
    assert calls.count("update") == 1 and len(calls) == 3
