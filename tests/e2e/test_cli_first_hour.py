"""The `stratus` command as a new user meets it: --version, help that reads well, names it
derives, errors that say what to do, and output fit for a pipe or a terminal."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.metadata import version
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import typer

from server import STRATUS, StratusServer
from stratus.cli.main import app
from stratus.cli.main import main as cli_main

COLUMNS = 100
LAMBDA = 'def handler(event, context):\n    return {"statusCode": 200, "body": {"hi": 1}}\n'


def run(server: StratusServer, *args: str, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """The CLI with its output piped (not a terminal), as in a script or CI."""
    result = subprocess.run([STRATUS, *args], env={**server.env, **(env or {})},
                            capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"stratus {' '.join(args)}: {result.stdout}\n{result.stderr}")
    return result


def lambda_app(directory: Path, stem: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stem}.py"
    path.write_text(LAMBDA)
    return path


def test_version(server: StratusServer) -> None:
    assert run(server, "--version").stdout == f"stratus {version('stratus')}\n"


# -- help -----------------------------------------------------------------------------------
def _command_paths(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _command_paths(sub, (*path, name))


# Every command of the CLI's tree, so a new one cannot bring back the help's old faults unseen.
HELP_OF = list(_command_paths(typer.main.get_command(app)))


def help_in_process(command: tuple[str, ...], capsys: pytest.CaptureFixture[str],
                    monkeypatch: pytest.MonkeyPatch) -> str:
    """``stratus COMMAND --help`` as the installed script runs it (its ``main``, on the
    command tree it builds), in this process: a process per command would cost a second each.
    ``test_help_in_process_is_the_scripts`` holds it to the real process's output."""
    monkeypatch.setenv("COLUMNS", str(COLUMNS))
    monkeypatch.setattr(sys, "argv", ["stratus", *command, "--help"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        cli_main()
    assert exited.value.code in (0, None)
    return capsys.readouterr().out


def _cells(line: str) -> str:
    """A help line without the panel's borders."""
    return line.strip().strip("│").rstrip() if line.strip().startswith("│") else line.rstrip()


def _breaks_early(lines: list[str]) -> list[tuple[str, str]]:
    """Pairs of (line, continuation) where the continuation's first word would have fitted
    on the line: a break the source put there, not the wrap."""
    early = []
    for above, below in pairwise(lines):
        above_text, below_text = _cells(above), _cells(below)
        if not above_text.strip() or not below_text.strip() or "─" in above + below:
            continue
        start = len(below_text) - len(below_text.lstrip())
        if start == 0 or start >= len(above_text) or above_text[start - 1] != " " \
                or not above_text[:start].strip():
            continue  # not a continuation of the cell above in the same column
        if above_text[start:].startswith(" "):
            continue  # the cell above is empty here: a new row
        # A panel's line holds a border and a space of padding each side; a paragraph outside
        # one, a space each side.
        width = COLUMNS - 3 if above.startswith("│") else COLUMNS - 1
        first_word = below_text.split()[0]
        if len(above_text) + 1 + len(first_word) <= width:
            early.append((above, below))
    return early


@pytest.mark.parametrize("command", HELP_OF, ids=lambda c: " ".join(c) or "stratus")
def test_help_reads_well(command: tuple[str, ...], capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    text = help_in_process(command, capsys, monkeypatch)
    assert text.lstrip().startswith(f"Usage: stratus {' '.join(command)}".rstrip()), text
    lines = text.splitlines()
    assert "<bool>" not in text and "BOOLEAN" not in text
    assert max(len(line) for line in lines) <= COLUMNS
    assert _breaks_early(lines) == [], "a sentence broken where it need not be"


@pytest.mark.parametrize("command", [(), ("deploy",), ("jobs", "run")],
                         ids=lambda c: " ".join(c) or "stratus")
def test_help_in_process_is_the_scripts(server: StratusServer, command: tuple[str, ...],
                                        capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """What the help test reads in-process is, byte for byte, what the `stratus` process prints."""
    printed = run(server, *command, "--help", env={"COLUMNS": str(COLUMNS)}).stdout
    assert help_in_process(command, capsys, monkeypatch) == printed


def test_deploy_help_uses_the_width(server: StratusServer) -> None:
    lines = run(server, "deploy", "--help", env={"COLUMNS": str(COLUMNS)}).stdout.splitlines()
    row = next(line for line in lines if line.startswith("│ --llm "))
    # The description starts well inside the left half, and the rows reach the right edge.
    assert row.index("Serve this") < COLUMNS * 0.45, row
    assert max(len(_cells(line)) for line in lines if line.startswith("│")) >= COLUMNS - 12
    flags = next(line for line in lines if "--wait / --no-wait" in line)
    assert "Wait until" in flags


# -- names ------------------------------------------------------------------------------------
def test_a_lambda_handler_deploys_under_its_file_name(server: StratusServer,
                                                      tmp_path: Path) -> None:
    path = lambda_app(tmp_path / "lam", "Greet_User")
    deployed = run(server, "deploy", f"{path}:handler")
    assert "greet-user" in deployed.stderr
    answer = json.loads(run(server, "invoke", "greet-user", "{}").stdout)
    assert answer == {"hi": 1}
    named = run(server, "deploy", f"{path}:handler", "--name", "greet-other")
    assert "greet-other" in named.stderr and server.status("greet-other")["name"] == "greet-other"


def test_the_decorator_name_wins_over_the_file_name(server: StratusServer,
                                                    tmp_path: Path) -> None:
    (tmp_path / "dec").mkdir()
    path = tmp_path / "dec" / "some_file.py"
    path.write_text("import stratus\n\n\n@stratus.deployment(name=\"by-decorator\")\n"
                    "def handler(event, context):\n    return {}\n")
    deployed = run(server, "deploy", f"{path}:handler")
    assert "by-decorator" in deployed.stderr and "some-file" not in deployed.stderr


def test_an_underivable_name_is_refused_before_packing(server: StratusServer,
                                                       tmp_path: Path) -> None:
    path = lambda_app(tmp_path / "odd", "___")
    (tmp_path / "odd" / "weights.bin").write_bytes(os.urandom(2 << 20))
    failed = run(server, "deploy", f"{path}:handler", check=False)
    assert failed.returncode == 1
    assert "--name" in failed.stderr and "no deployment name" in failed.stderr
    assert "uploaded" not in failed.stderr and "warning" not in failed.stderr
    bad = run(server, "deploy", f"{path}:handler", "--name", "Not_Valid", check=False)
    assert bad.returncode == 1 and "not a valid deployment name" in bad.stderr


def test_an_unknown_deployment_suggests_the_closest(server: StratusServer,
                                                    tmp_path: Path) -> None:
    path = lambda_app(tmp_path / "sugg", "hello_sugg")
    run(server, "deploy", f"{path}:handler", "--min-replicas", "0")
    for args in (("status", "hello-sug"), ("invoke", "hello-sug"), ("rm", "hello-sug")):
        missing = run(server, *args, check=False)
        assert missing.returncode == 1
        assert "did you mean 'hello-sugg'?" in missing.stderr, missing.stderr
    for method, path_ in (("GET", "/api/deployments/helo-sugg"),
                          ("POST", "/api/deployments/helo-sugg/invoke")):
        response = server.http.request(method, path_, json={})
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["type"] == "not_found"
        assert error["message"] == "deployment 'helo-sugg' not found; did you mean 'hello-sugg'?"
    far = server.http.get("/api/deployments/zzzzzz").json()["error"]["message"]
    assert "did you mean" not in far
    # Another namespace is not told the names of this one's deployments.
    _, other = server.mint_key("sugg-other", "developer")
    with server.client_as(other) as client:
        for method, path_ in (("GET", "/api/deployments/hello-sug"),
                              ("POST", "/api/deployments/hello-sug/invoke")):
            response = client.request(method, path_, json={})
            assert response.status_code == 404
            assert "did you mean" not in response.json()["error"]["message"]


# -- output -----------------------------------------------------------------------------------
def test_unreachable_server_says_how_to_point_at_one(server: StratusServer) -> None:
    failed = run(server, "ls", "--server", "http://127.0.0.1:9", check=False)
    assert failed.returncode == 2
    assert "http://127.0.0.1:9" in failed.stderr
    assert "STRATUS_URL" in failed.stderr and "--server" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1, "piped errors are not wrapped"


def test_ls_json_and_logs_with_no_lines(server: StratusServer, tmp_path: Path) -> None:
    path = lambda_app(tmp_path / "quiet", "quiet_one")
    run(server, "deploy", f"{path}:handler", "--min-replicas", "0")
    listed = json.loads(run(server, "ls", "--json").stdout)
    assert "quiet-one" in {view["name"] for view in listed["deployments"]}
    logs = run(server, "logs", "quiet-one")
    assert logs.stdout == ""
    assert "no log lines yet for quiet-one" in logs.stderr


def test_a_big_bundle_warns_and_ignore_files_are_honoured(server: StratusServer,
                                                           tmp_path: Path) -> None:
    path = lambda_app(tmp_path / "big", "big_bundle")
    (tmp_path / "big" / "weights.bin").write_bytes(os.urandom(3 << 20))
    (tmp_path / "big" / "ignored.ckpt").write_bytes(os.urandom(3 << 20))
    (tmp_path / "big" / "local").mkdir()
    (tmp_path / "big" / "local" / "scratch.bin").write_bytes(os.urandom(3 << 20))
    (tmp_path / "big" / ".gitignore").write_text("*.ckpt\n")
    (tmp_path / "big" / ".stratusignore").write_text("local/\n")
    deployed = run(server, "deploy", f"{path}:handler", "--min-replicas", "0",
                   env={"STRATUS_BUNDLE_WARN_MIB": "1"})
    flat = " ".join(deployed.stderr.split())
    assert "warning: the code bundle is 3.0 MiB" in flat
    assert "weights.bin (3.0 MiB)" in flat
    assert "ignored.ckpt" not in flat and "scratch.bin" not in flat
    assert "uploaded code bundle" in flat and " MB" not in flat
    # Piped: no bars, spinners or blank lines around the messages.
    assert "" not in deployed.stderr.splitlines()
    assert "━" not in deployed.stderr and "packing" not in deployed.stderr
    quiet = run(server, "deploy", f"{path}:handler", "--min-replicas", "0")
    assert "warning" not in quiet.stderr  # the default limit, 50 MiB


def _under_a_terminal(server: StratusServer, *args: str) -> str:
    """The CLI's output when stdout and stderr are a terminal (a pseudo-terminal)."""
    leader, follower = pty.openpty()
    env = {**server.env, "COLUMNS": "120", "LINES": "40", "TERM": "xterm"}
    process = subprocess.Popen([STRATUS, *args], env=env, stdin=subprocess.DEVNULL,
                               stdout=follower, stderr=follower)
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the process is gone
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif process.poll() is not None:
            break
    process.wait(10)
    os.close(leader)
    assert process.returncode == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_a_terminal_gets_one_bar_in_binary_units(server: StratusServer, tmp_path: Path) -> None:
    path = lambda_app(tmp_path / "tty", "tty_bundle")
    (tmp_path / "tty" / "weights.bin").write_bytes(os.urandom(3 << 20))
    shown = _under_a_terminal(server, "deploy", f"{path}:handler", "--min-replicas", "0")
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)
    assert "packing" in plain  # the spinner while the bundle packs
    frames = [line for line in re.split(r"[\r\n]", plain) if "uploading code bundle" in line]
    assert frames, plain
    for frame in frames:
        assert len(re.findall(r"[━╸╺]+", frame)) == 1, frame  # one bar, not two
        assert "MiB" in frame and not re.search(r"\d MB", frame), frame
    assert "uploaded code bundle" in plain and "3.0 MiB" in plain
