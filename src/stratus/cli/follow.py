"""``stratus jobs run --follow``: a progress bar driven by the job's EpochCompleted events
(epoch i of N, loss, time left) above its log as it streams. Ctrl-C detaches: the job runs on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from stratus.cli.client import Client, CliError
from stratus.cli.logs import logs_of, render

POLL_S = 0.5
ENDED = ("succeeded", "failed", "cancelled")


class EpochBar:
    """The bar's state as events arrive: pure bookkeeping over a rich Progress. Where there
    is no terminal to draw a bar on, each epoch is a line to ``plain`` instead."""

    def __init__(self, progress: Progress, total: int | None,
                 plain: Callable[[str], None] | None = None) -> None:
        self.progress = progress
        self.total = total
        self.plain = plain
        self.task: TaskID = progress.add_task("queued", total=total, loss="-")
        self.last_seq = 0
        self.status = "queued"

    def apply(self, events: list[dict[str, Any]], status: str) -> None:
        for event in events:
            self.last_seq = max(self.last_seq, int(event["seq"]))
            data = event["data"]
            if event["type"] == "JobStarted":
                self.progress.reset(self.task, total=self.progress.tasks[0].total, loss="-")
            elif event["type"] == "EpochCompleted":
                epoch, loss = int(data["epoch"]), f"{float(data['loss']):.4g}"
                self.progress.update(self.task, completed=epoch, loss=loss)
                if self.plain is not None:
                    of = f"/{self.total}" if self.total else ""
                    self.plain(f"epoch {epoch}{of}  loss {loss}")
        if status != self.status:
            self.status = status
        self.progress.update(self.task, description=status)


def _columns() -> tuple[Any, ...]:
    return (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
            MofNCompleteColumn(), TextColumn("epochs  loss {task.fields[loss]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())


def follow_job(connect: Callable[[], Client], job_id: str, total: int | None,
               console: Console) -> dict[str, Any] | None:
    """Show the job until it ends (returns its view) or Ctrl-C (returns None)."""
    with Progress(*_columns(), console=console, transient=False,
                  disable=not console.is_terminal) as progress:
        bar = EpochBar(progress, total, None if console.is_terminal else
                       lambda text: console.print(text, markup=False, highlight=False))

        def emit(text: str, raw: bool) -> None:
            for line in text.splitlines():
                if line:
                    progress.console.print(line if raw else render(line), markup=False,
                                           highlight=False)

        def stream() -> None:
            with connect() as client:
                try:
                    logs_of(client, f"/api/jobs/{job_id}/logs", {"tail": 1000}, True, False,
                            emit)
                except CliError as exc:
                    progress.console.print(f"log: {exc.message}", markup=False)

        reader = threading.Thread(target=stream, daemon=True, name="job-log")
        reader.start()
        try:
            with connect() as client:
                while True:
                    answer = client.json("GET", f"/api/jobs/{job_id}/events",
                                         params={"after": bar.last_seq})
                    bar.apply(answer["events"], answer["status"])
                    if answer["status"] in ENDED:
                        break
                    time.sleep(POLL_S)
                view: dict[str, Any] = client.json("GET", f"/api/jobs/{job_id}")
            reader.join(5.0)  # the log's last lines, which the server sends once it ended
        except KeyboardInterrupt:
            console.print(f"detached; job {job_id} runs on: `stratus jobs logs -f {job_id}`")
            return None
    console.print(f"job {job_id} [bold]{view['status']}[/bold]"
                  + (f": {view['error']}" if view.get("error") else "")
                  + ("  " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(view["metrics"].items()))
                     if view.get("metrics") else ""))
    return view
