"""The `stratus` command against a real server, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

from server import APPS, StratusServer


def test_deploy_invoke_status_logs_rm(server: StratusServer) -> None:
    deployed = server.cli("deploy", f"{APPS / 'basic' / 'app.py'}:Echo", "--name", "cli-echo",
                          "--min-replicas", "1", "--max-concurrency", "4", "--env", "GREETING=yo")
    assert "revision 1" in deployed.stderr and "ready" in deployed.stderr
    invoked = server.cli("invoke", "cli-echo", '{"q": 42}', "--include")
    body = json.loads(invoked.stdout)
    assert body["echo"] == {"q": 42} and body["greeting"] == "yo"
    assert "x-stratus-revision: 1" in invoked.stderr
    from_stdin = server.cli("invoke", "cli-echo", "-", stdin='{"s": 1}')
    assert json.loads(from_stdin.stdout)["echo"] == {"s": 1}

    listed = server.cli("ls")
    assert "cli-echo" in listed.stdout
    status = json.loads(server.cli("status", "cli-echo", "--json").stdout)
    assert status["replicas"]["ready"] == 1
    assert status["runtime"]["max_concurrency"] == 4
    human = server.cli("status", "cli-echo").stdout
    assert "cli-echo" in human and "ready" in human

    again = server.cli("deploy", f"{APPS / 'basic' / 'app.py'}:Echo", "--name", "cli-echo",
                       "--min-replicas", "1", "--max-concurrency", "4", "--env", "GREETING=yo")
    assert "already on the server" in again.stderr, "unchanged code is not uploaded twice"
    assert "revision 1" in again.stderr

    server.cli("rm", "cli-echo")
    missing = server.cli("status", "cli-echo", check=False)
    assert missing.returncode == 1 and "not_found" in missing.stderr


def test_deploy_from_a_manifest(server: StratusServer) -> None:
    deployed = server.cli("deploy", str(APPS / "manifest" / "stratus.yaml"))
    assert "greeter" in deployed.stderr
    result = json.loads(server.cli("invoke", "greeter", '{"name": "ada"}').stdout)
    assert result == {"message": "bonjour, ada"}
    view = server.status("greeter")
    assert view["scaling"]["min_replicas"] == 1 and view["runtime"]["timeout_s"] == 10


def test_cli_errors_are_clear(server: StratusServer) -> None:
    bad_target = server.cli("deploy", "nope.py", check=False)
    assert bad_target.returncode == 1 and "file.py:Object" in bad_target.stderr
    broken = server.cli("deploy", f"{APPS / 'broken_import' / 'app.py'}:Model", "--name", "cli-b",
                        check=False)
    assert broken.returncode == 1
    assert "definitely_not_an_installed_module" in broken.stderr
    bad_json = server.cli("invoke", "whatever", "{nope", check=False)
    assert bad_json.returncode == 1 and "not valid JSON" in bad_json.stderr
    failing = server.cli("deploy", f"{APPS / 'basic' / 'app.py'}:BadInit", "--name", "cli-init",
                         "--min-replicas", "1", check=False)
    assert failing.returncode == 1 and "model weights missing" in failing.stderr
    unreachable = server.cli("ls", "--server", "http://127.0.0.1:9", check=False)
    assert unreachable.returncode == 2 and "cannot reach" in unreachable.stderr


def test_logs_show_replica_output(server: StratusServer) -> None:
    server.deploy("basic", "app.py:Faulty", name="cli-logs")
    server.invoke("cli-logs", {"action": "raise"})
    logs = server.cli("logs", "cli-logs", "--tail", "50").stdout
    assert "ValueError: boom" in logs


def test_deploy_with_autoscaling_flags_and_status(server: StratusServer) -> None:
    server.cli("deploy", f"{APPS / 'basic' / 'app.py'}:Echo", "--name", "cli-scale",
               "--policy", "hybrid_histogram", "--policy-config", '{"bin_s": 30, "min_samples": 3}',
               "--provisioned", "1", "--schedule", "0 9 * * 1-5 for 8h keep 2",
               "--initial-replicas", "1", "--target-utilization", "0.5", "--min-replicas", "0")
    view = json.loads(server.cli("status", "cli-scale", "--json").stdout)
    scaling = view["scaling"]
    assert scaling["policy"] == "hybrid_histogram"
    assert scaling["policy_config"] == {"bin_s": 30, "min_samples": 3}
    assert scaling["provisioned_replicas"] == 1 and scaling["initial_replicas"] == 1
    assert scaling["schedules"] == [{"cron": "0 9 * * 1-5", "duration_s": 28800.0, "replicas": 2,
                                     "timezone": "UTC"}]
    human = server.cli("status", "cli-scale").stdout
    assert "hybrid_histogram" in human and "mode" in human and "last decision" in human
    bad = server.cli("deploy", f"{APPS / 'basic' / 'app.py'}:Echo", "--name", "cli-scale",
                     "--schedule", "whenever", check=False)
    assert bad.returncode == 1 and "cron" in bad.stderr


def test_simulate_generate_and_replay(server: StratusServer, tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    server.cli("simulate", "--generate", str(trace), "--deployments", "5", "--hours", "1",
               "--seed", "3")
    assert trace.read_text().startswith("timestamp_s,deployment,duration_ms\n")
    result = json.loads(server.cli("simulate", "--trace", str(trace), "--policy", "kpa",
                                   "--cold-start-ms", "200", "--json").stdout)
    for key in ("cold_start_fraction", "p50_latency_ms", "p99_latency_ms", "busy_replica_seconds",
                "idle_replica_seconds", "cost"):
        assert key in result, key
    assert len(result["deployments"]) == 5
