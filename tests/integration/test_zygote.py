"""The zygotes: thread-free before the fork, per-replica thread counts after it, and a cold
start that pays for neither the interpreter nor the imports."""

from __future__ import annotations

import os
from pathlib import Path

from server import StratusServer, children, wait_for


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_zygotes_hold_one_thread_and_replicas_set_their_own(server: StratusServer) -> None:
    server.deploy("torchapp", "app.py:TinyNet", name="zy-torch", preload=["torch"], threads=2,
                  min_replicas=1)
    view = server.wait_ready("zy-torch")
    replica_pid = view["replicas"]["items"][0]["pid"]
    response = server.invoke("zy-torch", {"x": [[1.0] * 16]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["torch_threads"] == 2
    assert len(body["y"][0]) == 4

    assert server.process is not None
    # Other tests on this server preload more (torch,transformers): match the exact list.
    profiles = [pid for pid in children(server.process.pid) if "stratus.runtime.zygote" in _cmdline(pid)
                and "--preload torch " in _cmdline(pid) + " "]
    assert len(profiles) == 1
    revision_zygotes = children(profiles[0])
    assert revision_zygotes, "the profile zygote forks one zygote per code bundle"
    for zygote in [profiles[0], *revision_zygotes]:
        assert _threads(zygote) == 1, f"zygote {zygote} must not run threads before forking"
    parents = {int(Path(f"/proc/{replica_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])}
    assert parents <= set(revision_zygotes), "replicas are forked from the revision zygote"


def test_forked_replicas_draw_different_random_numbers(server: StratusServer) -> None:
    server.deploy("torchapp", "app.py:TinyNet", name="zy-seed", preload=["torch"], min_replicas=2,
                  max_replicas=2)
    view = server.wait_ready("zy-seed", 2)
    assert len({item["pid"] for item in view["replicas"]["items"]}) == 2
    probes: dict[str, float] = {}

    def both() -> bool:
        response = server.invoke("zy-seed", {})
        body = response.json()
        probes.setdefault(response.headers["x-request-id"], body["seed_probe"])
        return len(set(probes.values())) >= 2

    wait_for(both, 20, "two distinct random draws")


def test_cold_start_finds_the_preloaded_modules_already_imported(server: StratusServer) -> None:
    """What makes the cold start cheap, checked as structure rather than timing: the replica's
    init finds torch already imported (by the zygote it was forked from)."""
    server.deploy("torchapp", "app.py:TinyNet", name="zy-cold", preload=["torch"],
                  min_replicas=0, scale_to_zero_after_s=1)
    response = server.invoke("zy-cold", {})
    assert response.status_code == 200
    assert response.headers["x-stratus-cold-start"] == "true"
    assert response.json()["torch_was_preloaded"] is True
    assert server.status("zy-cold")["replicas"]["items"][0]["init_ms"] is not None

    server.deploy("torchapp", "app.py:TinyNet", name="zy-no-preload", preload=[], min_replicas=0)
    response = server.invoke("zy-no-preload", {})
    assert response.status_code == 200
    assert response.json()["torch_was_preloaded"] is False
