"""``stratus revisions | traffic | rollout | rollback`` as a user runs them, against a real
server with real replicas: the split they set is the split requests take."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from server import APPS, StratusServer

APP = ("basic", "app.py:Echo")


def two_revisions(server: StratusServer, name: str) -> None:
    """A deployment whose revision 2 differs from revision 1 only in its config."""
    for version in (1, 2):
        view = server.deploy(*APP, name=name, min_replicas=1, max_replicas=2,
                             config={"v": version})
        assert view["revision"] == version
        server.wait_ready(name)


def cli_json(server: StratusServer, *args: str) -> Any:
    return json.loads(server.cli(*args, "--json").stdout)


def refused(server: StratusServer, *args: str) -> tuple[int, str]:
    """The exit code and the error text, with rich's line wrapping undone."""
    result: subprocess.CompletedProcess[str] = server.cli(*args, check=False)
    return result.returncode, " ".join(result.stderr.split())


def served_by(server: StratusServer, name: str, requests: int) -> Counter[str]:
    answers = [server.invoke(name, {"i": i}) for i in range(requests)]
    assert {answer.status_code for answer in answers} == {200}
    return Counter(answer.headers["x-stratus-revision"] for answer in answers)


def test_revisions_and_a_weighted_split(server: StratusServer) -> None:
    two_revisions(server, "cli-split")
    listed = cli_json(server, "revisions", "cli-split")["revisions"]
    assert [item["revision"] for item in listed] == [1, 2]
    table = server.cli("revisions", "cli-split").stdout
    assert "app.py:Echo" in table and "REV" in table and "TRAFFIC" in table

    changed = cli_json(server, "traffic", "cli-split", "1=50", "2=50")
    assert changed["traffic"] == {"1": 50, "2": 50}
    shown = server.cli("traffic", "cli-split").stdout
    assert "50%" in shown and "cli-split" in shown
    assert cli_json(server, "traffic", "cli-split")["traffic"] == {"1": 50, "2": 50}
    assert {item["revision"]: item["weight"] for item in
            cli_json(server, "revisions", "cli-split")["revisions"]} == {1: 50, 2: 50}
    # 40 requests at 50/50: one side empty is a one-in-a-trillion event.
    assert set(served_by(server, "cli-split", 40)) == {"1", "2"}

    pinned = cli_json(server, "traffic", "cli-split", "--shadow", "1", "--sticky-header", "x-user")
    assert pinned["shadow"] == 1 and pinned["sticky"]["header"] == "x-user"
    assert pinned["traffic"] == {"1": 50, "2": 50}, "options leave the split as it is"
    cleared = cli_json(server, "traffic", "cli-split", "2=100", "--no-shadow", "--no-sticky")
    assert cleared["shadow"] is None and cleared["sticky"] is None
    assert {rev: weight for rev, weight in cleared["traffic"].items() if weight} == {"2": 100}
    assert set(served_by(server, "cli-split", 10)) == {"2"}


def test_blue_green_rollout_canary_and_rollback(server: StratusServer) -> None:
    two_revisions(server, "cli-roll")
    server.cli("traffic", "cli-roll", "2=100")
    # The CLI tells the phases it polls (every 0.25 s); a phase of 2 s holds several polls
    # even on a loaded machine (one of 1 s fell between two polls a second apart in CI).
    done = server.cli("rollout", "cli-roll", "--to", "1", "--watch", "2s", "--wait")
    followed = " ".join(done.stderr.split())
    assert "watching" in followed and "done: traffic to revision 1 100%" in followed
    assert set(served_by(server, "cli-roll", 10)) == {"1"}

    back = " ".join(server.cli("rollback", "cli-roll", "--wait").stderr.split())
    # Revision 2 is still warm, so the switch back may be over before the command returns.
    assert "rolling cli-roll back to revision 2" in back or "rolled back cli-roll" in back
    assert "traffic to revision 2 100%" in back
    assert set(served_by(server, "cli-roll", 10)) == {"2"}

    canary = server.cli("rollout", "cli-roll", "--to", "1", "--canary", "50", "--step", "50",
                        "--interval", "2s", "--window", "500ms", "--watch", "1s", "--wait")
    steps = " ".join(canary.stderr.split())
    assert "canary 50% → 100%" in steps and "revision 1 at 50%" in steps
    assert "done: traffic to revision 1 100%" in steps
    final = cli_json(server, "traffic", "cli-roll")
    assert final["rollout"] is None or final["rollout"]["state"] == "succeeded"
    assert {rev: weight for rev, weight in final["traffic"].items() if weight} == {"1": 100}


def test_refusals_name_the_problem(server: StratusServer) -> None:
    server.deploy(*APP, name="cli-refuse", min_replicas=0)
    code, text = refused(server, "traffic", "cli-refuse", "1=abc")
    assert code == 2 and "'1=abc' is not REV=WEIGHT" in text
    code, text = refused(server, "traffic", "cli-refuse", "1=60", "2=30")
    assert code == 2 and "the weights sum to 90, not 100" in text
    code, text = refused(server, "rollout", "cli-refuse", "--to", "1", "--interval", "soon")
    assert code == 2 and "'soon' is not a duration" in text

    # The server holds the same rule for clients that skip the CLI.
    unsummed = server.http.put("/api/deployments/cli-refuse/traffic", json={"traffic": {"1": 90}})
    assert unsummed.status_code == 400 and "100" in unsummed.json()["error"]["message"]

    code, text = refused(server, "traffic", "cli-refuse", "1=50", "7=50")
    assert code == 1 and "(400)" in text and "7" in text
    code, text = refused(server, "rollout", "cli-refuse", "--to", "7")
    assert code == 1 and "7" in text
    for args in (["revisions", "cli-nowhere"], ["traffic", "cli-nowhere"],
                 ["traffic", "cli-nowhere", "1=100"], ["rollout", "cli-nowhere", "--to", "1"],
                 ["rollback", "cli-nowhere"]):
        code, text = refused(server, *args)
        assert code == 1 and "(404)" in text and "cli-nowhere" in text, (args, text)


def test_a_rollout_that_is_rolled_back_fails_the_wait(server: StratusServer) -> None:
    server.deploy(*APP, name="cli-bad", min_replicas=1, max_replicas=1)
    server.wait_ready("cli-bad")
    server.deploy("basic", "app.py:BadInit", name="cli-bad", min_replicas=1, max_replicas=1)
    code, text = refused(server, "rollout", "cli-bad", "--to", "2", "--wait")
    assert code == 1 and "rollout of revision 2 rolled_back" in text, text
    assert "traffic: revision 1 100%" in text
    listed = cli_json(server, "revisions", "cli-bad")["revisions"]
    assert [(item["revision"], item["status"]) for item in listed] == [(1, "ready"), (2, "failed")]
    assert set(served_by(server, "cli-bad", 5)) == {"1"}


def test_judge_settings_from_flags_and_a_manifest_reach_the_deployment(
        server: StratusServer, tmp_path: Path) -> None:
    target = f"{APPS / 'basic' / 'app.py'}:Echo"
    server.cli("deploy", target, "--name", "cli-judge", "--min-replicas", "0",
               "--watch", "3s", "--window", "10s", "--error-ratio-relative", "0.2",
               "--min-errors", "3", "--p95-relative", "1", "--p95-min-delta-ms", "30",
               "--min-requests", "5")
    declared = server.status("cli-judge")["rollout"]
    assert (declared["watch_s"], declared["window_s"], declared["canary"]) == (3.0, 10.0, None)
    assert declared["thresholds"] == {"error_ratio_relative": 0.2, "min_errors": 3,
                                      "p95_relative": 1.0, "p95_min_delta_ms": 30.0,
                                      "min_requests": 5}
    # `stratus rollout` overrides what it names and takes the rest from the deployment.
    server.deploy(*APP, name="cli-judge", min_replicas=0, config={"v": 2},
                  rollout={"promote": False, **{k: declared[k] for k in ("watch_s", "window_s",
                                                                          "thresholds")}})
    view = cli_json(server, "rollout", "cli-judge", "--to", "2", "--watch", "0",
                    "--min-requests", "9")
    assert view["rollout"]["watch_s"] == 0 and view["rollout"]["window_s"] == 10.0
    assert (view["rollout"]["thresholds"]["min_requests"],
            view["rollout"]["thresholds"]["min_errors"]) == (9, 3)

    # A manifest's rollout, with a flag over one of its thresholds.
    shutil.copy(APPS / "basic" / "app.py", tmp_path / "app.py")
    manifest = tmp_path / "stratus.yaml"
    manifest.write_text("name: cli-judge-m\nentrypoint: app.py:Echo\nmin_replicas: 0\n"
                        "rollout:\n  watch_s: 4\n  thresholds: {min_requests: 7, p95_relative: 2}\n")
    server.cli("deploy", str(manifest), "--min-errors", "2")
    declared = server.status("cli-judge-m")["rollout"]
    assert declared["watch_s"] == 4.0
    assert {k: declared["thresholds"][k] for k in ("min_requests", "p95_relative", "min_errors")} \
        == {"min_requests": 7, "p95_relative": 2.0, "min_errors": 2}

    code, text = refused(server, "deploy", target, "--name", "cli-judge", "--watch", "soon")
    assert code == 2 and "'soon' is not a duration" in text
    code, text = refused(server, "deploy", target, "--name", "cli-judge", "--min-requests", "0")
    assert code == 2 and "--min-requests" in text
    manifest.write_text("name: cli-judge-m\nentrypoint: app.py:Echo\nrollout: {watch_s: -1}\n")
    code, text = refused(server, "deploy", str(manifest))
    assert code == 1 and "(400)" in text and "rollout.watch_s" in text, text
