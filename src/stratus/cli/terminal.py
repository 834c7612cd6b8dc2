"""The consoles every command prints through, and how sizes read: on a terminal, rich's
bars and spinners; on a pipe, whole lines, unwrapped, with no bars, spinners or blank lines."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text

# Wide enough that a table written to a pipe or a file keeps its rows on one line each.
PIPE_WIDTH = 400
UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def make_console(stderr: bool = False) -> Console:
    """A console for stdout (or stderr). Rich wraps at 80 columns when it cannot ask a
    terminal; a pipe's reader (grep, a log file, a CI page) wants each line whole."""
    console = Console(stderr=stderr)
    if console.is_terminal:
        return console
    return Console(stderr=stderr, soft_wrap=True, width=PIPE_WIDTH)


def size_text(count: float) -> str:
    """Bytes in binary units, as everywhere in the CLI: ``512 B``, ``1.5 KiB``, ``141.2 MiB``."""
    for unit in UNITS[:-1]:
        if abs(count) < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} {UNITS[-1]}"


class SpeedColumn(ProgressColumn):
    """Transfer speed in binary units (rich's own column counts in decimal MB)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("?" if speed is None else f"{size_text(speed)}/s", style="progress.data.speed")


def transfer_bar(console: Console) -> Progress:
    """One bar for bytes moving: the label, the bar, done/total and speed, in MiB. None at
    all when the console is not a terminal: a pipe would get a blank line for it."""
    columns: tuple[Any, ...] = (TextColumn("{task.description}"), BarColumn(),
                                DownloadColumn(binary_units=True), SpeedColumn())
    return Progress(*columns, console=console, transient=True, disable=not console.is_terminal)
