"""tests/vm/fetch_kernel.sh, which downloads the cgroup v2 tests' guest kernel: on a fresh
machine whose package lists are empty or stale it updates them once, never twice. apt-cache and
apt-get are replaced by recording scripts (a real update and download need the network), and the
download always fails, so each run shows every update it would try."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "vm" / "fetch_kernel.sh"
PACKAGE = "linux-image-6.1.0-99-amd64"

FAKE_APT_CACHE = f"""#!/usr/bin/env bash
echo "apt-cache $*" >> "$LOG"
[ -e "$STATE/lists" ] && echo "  Depends: {PACKAGE}"
exit 0
"""
FAKE_APT_GET = """#!/usr/bin/env bash
echo "apt-get $*" >> "$LOG"
case "$1" in
    update) touch "$STATE/lists" ;;
    download) echo "E: Failed to fetch" >&2; exit 100 ;;
esac
"""


def run(tmp_path: Path, lists: bool) -> tuple[int, list[str]]:
    # A copy of the script in a tree of its own: it works in its parent's .vm-cache.
    tree, bin_dir, state = tmp_path / "tests", tmp_path / "bin", tmp_path / "state"
    for directory in (tree / "vm", bin_dir, state):
        directory.mkdir(parents=True)
    shutil.copy(SCRIPT, tree / "vm" / SCRIPT.name)
    for name, text in (("apt-cache", FAKE_APT_CACHE), ("apt-get", FAKE_APT_GET)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    if lists:  # lists that know the package, as a stale set still may
        (state / "lists").touch()
    log = tmp_path / "apt.log"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(log),
           "STATE": str(state)}
    result = subprocess.run(["bash", str(tree / "vm" / SCRIPT.name)], env=env,
                            capture_output=True, text=True, timeout=30)
    return result.returncode, log.read_text().splitlines() if log.exists() else []


def test_empty_lists_are_updated_once_before_the_download(tmp_path: Path) -> None:
    code, calls = run(tmp_path, lists=False)
    download = f"apt-get download -q {PACKAGE}"
    assert code != 0
    assert calls == ["apt-cache depends linux-image-amd64", "apt-get update -qq",
                     "apt-cache depends linux-image-amd64", download, download]


def test_stale_lists_are_updated_once_after_a_failed_download(tmp_path: Path) -> None:
    code, calls = run(tmp_path, lists=True)
    download = f"apt-get download -q {PACKAGE}"
    assert code != 0
    assert calls == ["apt-cache depends linux-image-amd64", download, "apt-get update -qq",
                     download]


def test_a_kernel_already_unpacked_is_kept(tmp_path: Path) -> None:
    boot = tmp_path / "tests" / ".vm-cache" / "kernel" / "boot"
    boot.mkdir(parents=True)
    (boot / "vmlinuz-6.1.0-99-amd64").touch()
    code, calls = run(tmp_path, lists=False)
    assert code == 0 and calls == []
