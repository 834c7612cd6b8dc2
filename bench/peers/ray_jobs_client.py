"""Ray Jobs client of bench/jobs.py; runs inside ``bench/.venv-ray``, not ``.venv``.

Against a running cluster (``ray start --head``, started by the harness), it submits the
same script ``--warmup`` + ``--runs`` times, one at a time, and prints one JSON document on
stdout. ``--mode sdk`` submits with ``JobSubmissionClient.submit_job``; ``--mode cli`` runs
``ray job submit --no-wait`` (so its figure includes the CLI's own start-up). Each run: the
client's ``time.time()`` just before the submission, the script's first line's time (read from
its stamp file), and the job's end (status polled with the SDK) before the next run starts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray
from ray.job_submission import JobStatus, JobSubmissionClient

TERMINAL = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
POLL_S = 0.005  # how often the stamp file is looked for; the figure is read from the file


def wait_for_stamp(stamp: Path, deadline: float) -> float:
    while not stamp.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the job never wrote {stamp}")
        time.sleep(POLL_S)
    return float(stamp.read_text())


def wait_for_end(client: JobSubmissionClient, job_id: str, deadline: float) -> str:
    while True:
        status = client.get_job_status(job_id)
        if status in TERMINAL:
            return str(status.value)
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {status} at the deadline")
        time.sleep(0.02)


def one_run(args: argparse.Namespace, client: JobSubmissionClient, index: int) -> dict[str, Any]:
    stamp = Path(args.stamp_dir) / f"ray-{args.mode}-{index}"
    submission_id = f"bench-{args.mode}-{os.getpid()}-{index}"
    command = [args.python, args.script, str(stamp)]
    deadline = time.monotonic() + args.timeout
    cli_exit_s = None
    started = time.time()
    if args.mode == "sdk":
        client.submit_job(entrypoint=" ".join(command), submission_id=submission_id)
        submitted = time.time()
        first_line = wait_for_stamp(stamp, deadline)
    else:
        proc = subprocess.Popen(
            [args.ray_bin, "job", "submit", "--address", args.address, "--submission-id",
             submission_id, "--no-wait", "--", *command],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        first_line = wait_for_stamp(stamp, deadline)
        _, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        submitted = time.time()
        cli_exit_s = submitted - started
        if proc.returncode != 0:
            raise RuntimeError(f"ray job submit failed ({proc.returncode}): {err.decode()[-500:]}")
    status = wait_for_end(client, submission_id, deadline)
    ended = time.time()
    if status != "SUCCEEDED":
        logs = client.get_job_logs(submission_id)
        raise RuntimeError(f"job {submission_id} ended {status}:\n{logs[-1000:]}")
    return {"to_first_line_s": first_line - started,
            "submit_returned_s": None if args.mode == "cli" else submitted - started,
            "cli_exit_s": cli_exit_s, "to_end_s": ended - started}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True, help="the dashboard's http://host:port")
    parser.add_argument("--mode", choices=("sdk", "cli"), required=True)
    parser.add_argument("--script", required=True)
    parser.add_argument("--stamp-dir", required=True)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--gap", type=float, default=0.2, help="idle seconds between runs")
    parser.add_argument("--timeout", type=float, default=120.0, help="per run")
    parser.add_argument("--python", default=sys.executable, help="the job's interpreter")
    parser.add_argument("--ray-bin", default=str(Path(sys.executable).parent / "ray"))
    args = parser.parse_args()
    client = JobSubmissionClient(args.address)
    samples = []
    for index in range(args.warmup + args.runs):
        time.sleep(args.gap)
        run = one_run(args, client, index)
        run["warmup"] = index < args.warmup
        print(f"ray {args.mode} run {index}: {run['to_first_line_s'] * 1000:.1f} ms to the first "
              f"line" + (" (warm-up)" if run["warmup"] else ""), file=sys.stderr, flush=True)
        samples.append(run)
    json.dump({"ray_version": ray.__version__, "mode": args.mode, "samples": samples}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
