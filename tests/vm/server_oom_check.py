"""A whole Stratus server on a cgroup v2 kernel, run as root in a guest (tests/vm/guest.py):
its replicas get v2 cgroups, and one whose handler allocates past its memory limit is killed
by the kernel, which the API names ``out_of_memory``. Prints a last line for the host's test."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for server.py

from server import TEST_ENV, StratusServer, wait_for

ROOT = Path("/sys/fs/cgroup")
# No headroom: the cgroup's limit is memory_mb itself, so the kernel, not the zygote's
# watchdog (which kills past memory_mb four times a second), is the one to stop the hog.
CONFIG = "sandbox:\n  memory_headroom_mb: 0\n  pids: 64\n"
SLOW = {**TEST_ENV, "STRATUS_HEARTBEAT_TIMEOUT_S": "120"}  # an emulated CPU is slow


def main() -> None:
    data = Path(tempfile.mkdtemp(prefix="stratus-vm-")) / "data"
    data.mkdir()
    (data / "stratus.yaml").write_text(CONFIG)
    server = StratusServer(data, SLOW)
    server.ready_timeout = 600
    server.http.timeout = httpx.Timeout(600)
    server.start()
    try:
        check(server)
    finally:
        server.stop()
    left = sorted(p.name for p in ROOT.iterdir() if p.name.startswith("stratus-srv-"))
    assert not left, f"the stopped server left cgroups: {left}"
    print("stratus-server-check ok")


def check(server: StratusServer) -> None:
    assert f"replica cgroups: v2 memory+pids in {ROOT}" in server.log_tail(400), server.log_tail()
    server.deploy("sandbox", "app.py:Inspect", name="look", max_replicas=1)
    seen = server.invoke("look", {})
    assert seen.status_code == 200, seen.text
    (line,) = seen.json()["cgroup"].splitlines()
    assert line.startswith("0::/stratus-srv-") and line.count("/") == 2, line
    print(f"a replica's cgroup: {line}", flush=True)

    server.deploy("sandbox", "app.py:Hog", name="hog", memory_mb=96, max_replicas=1)
    warm = server.invoke("hog", {"mb": 16})
    assert warm.status_code == 200, warm.text
    over = server.invoke("hog", {"mb": 400, "at_once": True})
    assert over.status_code == 500, over.text
    error = over.json()["error"]
    assert error["type"] == "out_of_memory" and "memory limit of 96 MB" in error["message"], error
    print(f"the client got: {error}", flush=True)

    def exits() -> list[dict[str, object]] | None:
        found: list[dict[str, object]] = server.status("hog")["replica_exits"]
        return found or None

    ended = wait_for(exits, 60, "the hog's exit in its status")
    # The kernel's word, without the watchdog's "(N MiB of its own memory)".
    assert any(e["out_of_memory"] and e["reason"] == "replica exceeded its memory limit of 96 MB"
               for e in ended), ended
    print(f"replica_exits: {ended}", flush=True)
    after = server.invoke("hog", {"mb": 16})
    assert after.status_code == 200, after.text


if __name__ == "__main__":
    main()
