"""The job bench/jobs.py starts on both systems: its first line of user code records the time.

Stratus runs ``train(ctx)`` (entrypoint ``first_line.py:train``, the stamp path in
``ctx.params["stamp"]``); Ray Jobs runs the file as a script (``python first_line.py STAMP``),
whose first line is the one below. The time goes to the stamp file, written atomically.
"""

import time

STARTED = time.time()  # Ray Jobs: the script's first line of user code

import os  # noqa: E402
import sys  # noqa: E402


def write_stamp(path: str, started: float) -> None:
    partial = f"{path}.partial"
    with open(partial, "w") as out:
        out.write(repr(started))
    os.replace(partial, path)  # the harness never reads half a number


def train(ctx):  # type: ignore[no-untyped-def]
    started = time.time()  # Stratus: the job function's first line of user code
    write_stamp(ctx.params["stamp"], started)


if __name__ == "__main__":
    write_stamp(sys.argv[1], STARTED)
