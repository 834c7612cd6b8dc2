"""Harness side of bench/jobs.py's Stratus target: a throwaway server, the job's code bundle
uploaded once, then one job at a time timed from just before ``POST /api/jobs`` to the
first line of ``train(ctx)`` (the time the job writes to its stamp file)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from common import http_call, log
from stratus.cli.bundle import build_bundle
from stratus_target import StratusServer

JOB_DIR = Path(__file__).resolve().parent / "handlers" / "jobs"
ENTRYPOINT = "first_line.py:train"
TERMINAL = ("succeeded", "failed", "cancelled")
POLL_S = 0.005  # how often the stamp file is looked for; the figure is read from the file


class StratusJobs:
    def __init__(self, server: StratusServer) -> None:
        self.server = server
        self.headers = {**server.auth_headers(), "Content-Type": "application/json"}
        self.bundle = ""

    def upload(self) -> None:
        bundle = build_bundle(JOB_DIR)
        resp = http_call("PUT", f"{self.server.base_url}/api/blobs/{bundle.digest}", bundle.data,
                         {**self.server.auth_headers(),
                          "Content-Type": "application/octet-stream"})
        if resp.status not in (200, 201):
            raise RuntimeError(f"PUT /api/blobs: {resp.status} {resp.body[:300]!r}")
        self.bundle = bundle.digest

    def job(self, job_id: str) -> dict[str, Any]:
        resp = http_call("GET", f"{self.server.base_url}/api/jobs/{job_id}", headers=self.headers)
        if resp.status != 200:
            raise RuntimeError(f"GET /api/jobs/{job_id}: {resp.status} {resp.body[:300]!r}")
        view: dict[str, Any] = resp.json()
        return view

    def _failed(self, job_id: str) -> None:
        view = self.job(job_id)
        if view["status"] in ("failed", "cancelled"):
            raise RuntimeError(f"job {job_id} {view['status']}: {view.get('error')}")

    def wait_for_stamp(self, stamp: Path, job_id: str, deadline: float) -> float:
        checked = time.monotonic()
        while not stamp.exists():
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"job {job_id} never wrote {stamp}: {self.job(job_id)}")
            if now - checked > 0.5:  # a job that failed will never write it
                self._failed(job_id)
                checked = now
            time.sleep(POLL_S)
        return float(stamp.read_text())

    def wait_for_end(self, job_id: str, deadline: float) -> str:
        while True:
            status = str(self.job(job_id)["status"])
            if status in TERMINAL:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {status} at the deadline")
            time.sleep(0.02)

    def one_run(self, stamp: Path, timeout: float) -> dict[str, Any]:
        body = json.dumps({"code": {"bundle": self.bundle, "entrypoint": ENTRYPOINT},
                           "params": {"stamp": str(stamp)}, "experiment": "bench-jobs"}).encode()
        deadline = time.monotonic() + timeout
        started = time.time()
        resp = http_call("POST", f"{self.server.base_url}/api/jobs", body, self.headers)
        submitted = time.time()
        if resp.status != 201:
            raise RuntimeError(f"POST /api/jobs: {resp.status} {resp.body[:500]!r}")
        job_id = resp.json()["id"]
        first_line = self.wait_for_stamp(stamp, job_id, deadline)
        status = self.wait_for_end(job_id, deadline)
        ended = time.time()
        if status != "succeeded":
            raise RuntimeError(f"job {job_id} {status}: {self.job(job_id).get('error')}")
        return {"to_first_line_s": first_line - started, "submit_returned_s": submitted - started,
                "to_end_s": ended - started, "job_id": job_id}


def bench_stratus(stamp_dir: Path, runs: int, warmup: int, gap: float,
                  timeout: float) -> dict[str, Any]:
    server = StratusServer("stratus-jobs")
    try:
        server.start()
        jobs = StratusJobs(server)
        jobs.upload()
        samples = []
        for index in range(warmup + runs):
            time.sleep(gap)
            run = jobs.one_run(stamp_dir / f"stratus-{index}", timeout)
            run["warmup"] = index < warmup
            log(f"stratus run {index}: {run['to_first_line_s'] * 1000:.1f} ms to the first line"
                + (" (warm-up)" if run["warmup"] else ""))
            samples.append(run)
    finally:
        server.stop()
    return {"samples": samples}
