"""``stratus revisions | traffic | rollout | rollback`` as a user runs them, against a real
server with real replicas: the split they set is the split requests take."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from typing import Any

from server import StratusServer

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
    done = server.cli("rollout", "cli-roll", "--to", "1", "--wait")
    assert "done: traffic to revision 1 100%" in " ".join(done.stderr.split())
    assert set(served_by(server, "cli-roll", 10)) == {"1"}

    back = " ".join(server.cli("rollback", "cli-roll", "--wait").stderr.split())
    # Revision 2 is still warm, so the switch back may be over before the command returns.
    assert "rolling cli-roll back to revision 2" in back or "rolled back cli-roll" in back
    assert "traffic to revision 2 100%" in back
    assert set(served_by(server, "cli-roll", 10)) == {"2"}

    canary = server.cli("rollout", "cli-roll", "--to", "1", "--canary", "50", "--step", "50",
                        "--interval", "1s", "--window", "500ms", "--wait")
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
