"""Usage and cost against a real server with a price sheet in its config file: the reported
cost of a known workload against a ground truth computed here, by hand, within 1%."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from server import StratusServer, wait_for

# Prices large enough that every term of C(t) = C0 + C1·t + Σ r_i·t_i shows in the total.
PRICES = {"per_request": 0.0001, "per_second": 0.00002, "per_gb_second": 0.0005,
          "per_replica_second": 0.00003, "per_prompt_token": 0.000001,
          "per_completion_token": 0.000002}
SLEEP_S = 0.25
CALLS = 6
MEMORY_MB = 256


@pytest.fixture(scope="module")
def priced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StratusServer]:
    data_dir = tmp_path_factory.mktemp("usage")
    (data_dir / "stratus.yaml").write_text(yaml.safe_dump({"prices": PRICES}))
    # COLUMNS: the CLI's table is not folded to a pipe's 80 columns.
    instance = StratusServer(data_dir, {"STRATUS_TICK_S": "0.2", "COLUMNS": "200"})
    instance.start()
    yield instance
    instance.stop()


def _report(server: StratusServer, **params: str) -> dict[str, Any]:
    response = server.http.get("/api/usage", params=params)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def _group(report: dict[str, Any], deployment: str) -> dict[str, Any]:
    (group,) = [g for g in report["groups"] if g.get("deployment") == deployment]
    return group


def test_cost_of_a_known_workload_matches_the_hand_computed_truth(priced: StratusServer) -> None:
    priced.deploy("basic", "app.py:Echo", name="metered", memory_mb=MEMORY_MB,
                  min_replicas=1, max_replicas=1, ready=1)
    # A first call starts the replica's handler thread; the measured workload begins after it.
    assert priced.invoke("metered", {}).status_code == 200
    since = datetime.now(UTC).isoformat()
    client_s = []
    for _ in range(CALLS):
        began = time.perf_counter()
        response = priced.invoke("metered", {"sleep": SLEEP_S})
        client_s.append(time.perf_counter() - began)
        assert response.status_code == 200, response.text

    report = wait_for(lambda: (r := _report(priced, since=since))
                      and _group(r, "metered")["requests"] == CALLS and r, 10, "the records")
    group = _group(report, "metered")

    # The ground truth, by hand: each call ran SLEEP_S on a replica with a MEMORY_MB limit.
    def by_hand(durations: list[float]) -> float:
        return sum(PRICES["per_request"] + t * PRICES["per_second"]
                   + t * MEMORY_MB / 1024 * PRICES["per_gb_second"] for t in durations)

    # What ran lies between the handler's sleep (the least a call can take) and what the
    # client waited (the most): a loaded machine stretches each call by milliseconds, which
    # the meter rightly charges.
    truth = by_hand([SLEEP_S] * CALLS)
    reported = group["cost"]["invocations"]
    error = abs(reported - truth) / truth
    print(f"invocation cost: reported {reported:.9f}, truth {truth:.9f}, error {error:.3%}")
    assert truth * 0.999 <= reported <= by_hand(client_s)
    lower_gb_s = CALLS * SLEEP_S * MEMORY_MB / 1024
    assert lower_gb_s * 0.999 <= group["gb_seconds"] <= sum(client_s) * MEMORY_MB / 1024
    assert group["cold_starts"] == 0 and group["errors"] == 0

    # Each record's own time lies between the handler's sleep and what the client waited, and
    # the report is the model applied to those times.
    records = priced.http.get("/api/usage/records", params={"deployment": "metered",
                                                            "since": since}).json()["records"]
    durations = sorted(r["duration_s"] for r in records)
    assert len(durations) == CALLS
    for duration, waited in zip(durations, sorted(client_s), strict=True):
        assert SLEEP_S <= duration <= waited
    assert reported == pytest.approx(by_hand(durations), rel=1e-9)
    assert all(r["memory_limit_mb"] == MEMORY_MB and r["billed_memory_mb"] == MEMORY_MB
               and r["peak_rss_bytes"] > 0 for r in records)

    # One replica all along: always-on at that peak, for as long as the deployment lived.
    # From the server's record of the deployment, which the sampler watches from then on: the
    # client's clock before its deploy call also counted the upload and the request, seconds
    # on a loaded machine.
    status = priced.http.get("/api/deployments/metered").json()
    recorded = datetime.fromisoformat(status["created_at"])
    created = (recorded if recorded.tzinfo else recorded.replace(tzinfo=UTC)).timestamp()
    # The report reads the store, which the meter writes every second on a thread: on a loaded
    # machine that write lags by more. So wait until what was lived by now has been written; all
    # the sampler may miss is its last 0.25 s step and the pool's start after the record (the
    # bundle unpacked on a thread).
    lived_now = time.time() - created
    group = wait_for(lambda: (g := _group(_report(priced, since="10m"), "metered"))
                     and g["observed_s"] >= lived_now - 1.0 and g, 15, "the sampled time")
    assert group["peak_replicas"] == 1
    assert group["observed_s"] <= time.time() - created
    rate = PRICES["per_replica_second"]
    assert group["cost"]["always_on"] == pytest.approx(group["observed_s"] * rate, rel=1e-6)
    busy = group["replica_seconds"] - group["idle_replica_seconds"]
    assert busy == pytest.approx(CALLS * SLEEP_S, abs=1.0)  # sampled every 0.25 s
    assert group["cost"]["serverless"] == pytest.approx(
        group["cost"]["invocations"] + group["idle_replica_seconds"] * rate, rel=1e-9)


def test_tokens_of_an_llm_deployment_are_billed(priced: StratusServer,
                                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    from llm_models import build_tiny_gpt2  # torch and transformers: only for this test

    model = build_tiny_gpt2(tmp_path_factory.mktemp("usage-gpt") / "gpt")
    priced.cli("models", "push", "usage-gpt", str(model), "--version", "1.0.0")
    priced.cli("deploy", "--llm", "usage-gpt@1.0.0", "--name", "talker", "--min-replicas", "1",
               "--max-replicas", "1", "--memory", "2048")
    priced.wait_ready("talker")
    prompt = completion = 0
    for text in ("The old man", "Once upon a time"):
        answer = priced.http.post("/v1/completions", json={
            "model": "talker", "prompt": [text, text + " there"], "max_tokens": 4,
            "temperature": 0})
        assert answer.status_code == 200, answer.text
        prompt += answer.json()["usage"]["prompt_tokens"]
        completion += answer.json()["usage"]["completion_tokens"]
    # A stream's tokens reach the meter before its outcome does.
    with priced.http.stream("POST", "/v1/chat/completions", json={
            "model": "talker", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3,
            "stream": True, "stream_options": {"include_usage": True}}) as stream:
        events = [line[6:] for line in stream.iter_lines() if line.startswith("data: {")]
    usage = json.loads(events[-1])["usage"]
    prompt += usage["prompt_tokens"]
    completion += usage["completion_tokens"]

    def settled() -> dict[str, Any] | None:
        found = _report(priced, since="10m")
        group = _group(found, "talker") if any(
            g.get("deployment") == "talker" for g in found["groups"]) else None
        return group if group and group["completion_tokens"] == completion else None

    group = wait_for(settled, 10, "the token counts")
    assert group["requests"] == 5  # two prompts per completion: one invocation each
    assert group["prompt_tokens"] == prompt
    truth = prompt * PRICES["per_prompt_token"] + completion * PRICES["per_completion_token"]
    assert group["cost"]["prompt_tokens"] + group["cost"]["completion_tokens"] == pytest.approx(
        truth, rel=1e-9)
    assert group["gb_seconds"] == pytest.approx(group["duration_s"] * 2, rel=1e-6)  # 2048 MB


def test_the_cli_prints_the_report(priced: StratusServer) -> None:
    priced.deploy("basic", "app.py:Echo", name="cli-metered")
    assert priced.invoke("cli-metered", {}).status_code == 200
    shown = priced.cli("cost", "--since", "1h", "--by", "revision")
    assert "cli-metered r1" in shown.stdout and "total" in shown.stdout
    parsed = json.loads(priced.cli("cost", "--json", "--by", "namespace").stdout)
    assert [g["namespace"] for g in parsed["groups"]] == ["default"]
    assert parsed["total"]["requests"] >= 1
    refused = priced.cli("cost", "--by", "replica", check=False)
    assert refused.returncode == 2


@pytest.mark.parametrize("params, field", [
    ({"since": "yesterday"}, "since"),
    ({"since": "-5m"}, "since"),
    ({"since": "2999-01-01T00:00:00Z"}, "since"),
    ({"by": "replica"}, "by"),
])
def test_bad_since_or_by_is_a_contract_error(priced: StratusServer, params: dict[str, str],
                                              field: str) -> None:
    response = priced.http.get("/api/usage", params=params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    assert field in error["message"]
    assert error["request_id"] == response.headers["x-request-id"]


def test_usage_needs_a_key(priced: StratusServer) -> None:
    assert httpx.get(f"{priced.url}/api/usage").status_code == 401


def test_a_bad_price_sheet_stops_the_server(tmp_path: Path) -> None:
    (tmp_path / "stratus.yaml").write_text(yaml.safe_dump({"prices": {"per_request": -1}}))
    result = StratusServer(tmp_path).cli("serve", "--data-dir", str(tmp_path), "--port", "1",
                                          check=False)
    assert result.returncode != 0
    assert "per_request" in result.stderr
