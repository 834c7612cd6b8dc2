"""A real Prometheus server scrapes Stratus every second; its query API must agree with what
the test sent: requests by status, and cold starts."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from server import StratusServer, free_port, wait_for

PROMETHEUS = shutil.which("prometheus")


@pytest.fixture
def prometheus(server: StratusServer, tmp_path: Path) -> Iterator[str]:
    if PROMETHEUS is None:
        pytest.skip("the prometheus binary is missing: `make test-tools` installs Debian's")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{
            "job_name": "stratus",
            "static_configs": [{"targets": [server.url.removeprefix("http://")]}],
            "authorization": {"type": "Bearer", "credentials": server.key},
        }],
    }
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config_file}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(url), 30, "prometheus to start scraping Stratus", interval=0.2)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def _up(url: str) -> bool:
    try:
        # Prometheus listens before its storage is ready, and answers 503 until then; a
        # query right after readiness can still meet a 503 on a loaded machine.
        if httpx.get(f"{url}/-/ready", timeout=5).status_code != 200:
            return False
        return _query(url, 'up{job="stratus"}') == 1.0
    except httpx.TransportError:
        return False
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 503:
            return False
        raise


def _query(url: str, expression: str) -> float | None:
    response = httpx.get(f"{url}/api/v1/query", params={"query": expression}, timeout=5)
    response.raise_for_status()
    result = response.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_prometheus_sees_the_requests_and_cold_starts_sent(server: StratusServer,
                                                           prometheus: str) -> None:
    server.deploy("basic", "app.py:Echo", name="prom-echo", min_replicas=0, max_replicas=1)
    server.deploy("basic", "app.py:Faulty", name="prom-faulty", min_replicas=1)
    server.wait_ready("prom-faulty")
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: server.invoke("prom-echo", {"i": i}), range(25)))
    assert [r.status_code for r in answers] == [200] * 25
    assert sum(r.headers["x-stratus-cold-start"] == "true" for r in answers) >= 1
    failed = [server.invoke("prom-faulty", {"action": "raise"}) for _ in range(5)]
    assert [r.status_code for r in failed] == [500] * 5
    assert server.invoke("prom-faulty", {}).status_code == 200

    expected = {
        'sum(stratus_requests_total{deployment="prom-echo",code="200",protocol="native"})': 25,
        'sum(stratus_requests_total{deployment="prom-faulty",code="500"})': 5,
        'sum(stratus_requests_total{deployment="prom-faulty",code="200"})': 1,
        'sum(stratus_cold_starts_total{deployment="prom-echo"})': 1,
        'sum(stratus_request_duration_seconds_count{deployment="prom-echo"})': 25,
        'sum(stratus_queue_wait_seconds_count{deployment="prom-echo"})': 25,
    }

    def scraped() -> bool:
        return all(_query(prometheus, query) == value for query, value in expected.items())

    wait_for(scraped, 30, "Prometheus to scrape the counts", interval=0.5)
    # The cold start held at least one request for the replica's start-up.
    waited = _query(prometheus, 'sum(stratus_queue_wait_seconds_sum{deployment="prom-echo"})')
    assert waited is not None and waited > 0
    started = _query(prometheus,
                     'sum(stratus_cold_start_duration_seconds_count{deployment="prom-echo"})')
    assert started == 1
    assert _query(prometheus, 'sum(stratus_replicas{deployment="prom-echo",state="ready"})') == 1
    assert (_query(prometheus, 'process_resident_memory_bytes{job="stratus"}') or 0) > 0
    # Replica CPU is read from /proc in 10 ms ticks: a few no-op calls may not reach one.
    assert _query(prometheus, 'stratus_replica_cpu_seconds_total{deployment="prom-faulty"}') \
        is not None
    wait_for(lambda: (_query(prometheus, 'sum(stratus_invocation_gb_seconds_total'
                                         '{deployment="prom-echo"})') or 0) > 0,
             15, "metered GB-seconds to be scraped", interval=0.5)
