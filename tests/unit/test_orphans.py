"""Reaping what a dead server left: real processes whose command line names a socket."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from stratus.backends.orphans import dialling, reap

SLEEPER = "import time; time.sleep(60)"


def _fake_zygote(socket: Path) -> subprocess.Popen[bytes]:
    # Argv as a zygote's (and its forks'): the module, then --socket and its path.
    return subprocess.Popen([sys.executable, "-c", SLEEPER, "-m", "stratus.runtime.zygote",
                             "--socket", str(socket), "--profile", "default"])


def test_reap_kills_only_what_dials_this_socket(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "a" / "stratus.sock", tmp_path / "b" / "stratus.sock"
    ours.parent.mkdir()
    ours.write_text("")  # a dead server's socket file
    orphan, bystander = _fake_zygote(ours), _fake_zygote(theirs)
    try:
        assert dialling(str(ours)) == [orphan.pid]
        assert reap(str(ours)) == [orphan.pid]
        assert orphan.wait(5) == -9
        assert bystander.poll() is None
        assert not ours.exists()
        assert reap(str(ours)) == []
    finally:
        for process in (orphan, bystander):
            process.kill()
            process.wait()
