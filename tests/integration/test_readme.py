"""README.md's code blocks, run against a live server so that they cannot rot.

Every fenced block (```sh, ```python, ```yaml) has a marker on the line before it:

    <!-- test: run [in DIR] [with FIXTURE] [expect TEXT] -->
        run it in work/DIR (work/ without ``in``): sh with ``bash -eo pipefail``, python with
        this venv's interpreter. It must exit 0, a python block must print something, and
        with ``expect`` its output (stdout and stderr) must contain TEXT
    <!-- test: file PATH -->
        write it to work/PATH (a handler, a manifest) for the blocks after it
    <!-- test: skip: REASON -->
        not run, and why (a placeholder id, a service the test does not start, minutes of work)

A block without a marker fails the test, so a new block is run or skipped on purpose. Blocks
run in the README's order in one temporary work directory, whose ``repo/examples`` is a copy
of the repository's (for the blocks that run from the repository's root). The server is one
of the test's own: ``STRATUS_URL``, ``STRATUS_API_KEY`` and ``STRATUS_ADMIN_KEY`` are set,
this venv's ``bin`` comes first on ``PATH``, and in run blocks the server's address replaces
``http://127.0.0.1:8000`` and ``localhost:8000`` (the README's default). ``with`` names a
fixture made in the block's directory first (``FIXTURES``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from llm_models import build_tiny_gpt2
from server import TEST_ENV, StratusServer

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARKER = re.compile(r"^<!-- test: (?P<action>run|file|skip)(?P<rest>.*?) -->$")
RUN_OPTIONS = re.compile(r"^(?:\s+in\s+(?P<dir>\S+))?(?:\s+with\s+(?P<fixture>\S+))?"
                         r"(?:\s+expect\s+(?P<expect>.+))?$")
FENCE = re.compile(r"^```(?P<lang>\w*)\s*$")
LANGUAGES = ("sh", "python", "yaml")

# What a block needs made before it runs, by name, in the block's directory.
FIXTURES: dict[str, Callable[[Path], object]] = {
    # The README's "Hugging Face causal LM directory": a tiny GPT-2 with random weights, so
    # its answers are noise; the snippets are checked to run and answer, not for sense.
    "my-gpt-dir": lambda directory: build_tiny_gpt2(directory / "my-gpt-dir", chat_template=True),
}

@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    action: str  # run, file or skip
    rest: str  # what follows the action in the marker


def readme_blocks(text: str) -> Iterator[Block]:
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        marker = MARKER.match(lines[index - 1]) if index else None
        yield Block(index + 1, fence["lang"], "\n".join(lines[index + 1:end]) + "\n",
                    marker["action"] if marker else "", marker["rest"] if marker else "")
        index = end + 1


BLOCKS = list(readme_blocks(README.read_text()))


def test_every_block_says_whether_it_runs() -> None:
    assert len(BLOCKS) > 10
    for block in BLOCKS:
        where = f"README.md:{block.line}"
        assert block.language in LANGUAGES, f"{where}: a ```{block.language} block"
        assert block.action, f"{where}: no <!-- test: ... --> marker on the line before it"
        if block.action == "skip":
            assert block.rest.startswith(":") and block.rest[1:].strip(), \
                f"{where}: a skipped block says why (<!-- test: skip: REASON -->)"
        elif block.action == "file":
            assert block.rest.strip(), f"{where}: a file block names its path"
        else:
            options = RUN_OPTIONS.match(block.rest)
            assert options is not None, f"{where}: cannot read the marker {block.rest!r}"
            assert options["fixture"] in (None, *FIXTURES), f"{where}: no fixture {options['fixture']}"
            assert block.language in ("sh", "python"), f"{where}: only sh and python blocks run"
    assert sum(block.action == "run" for block in BLOCKS) >= 8


@pytest.fixture(scope="module")
def readme_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StratusServer]:
    instance = StratusServer(tmp_path_factory.mktemp("readme-server"), TEST_ENV)
    instance.start()
    yield instance
    instance.stop()


def _localised(code: str, url: str) -> str:
    code = code.replace("http://127.0.0.1:8000", url)
    code = code.replace("localhost:8000", url.removeprefix("http://"))
    return code


def _run(block: Block, work: Path, server: StratusServer, env: dict[str, str]) -> None:
    options = RUN_OPTIONS.match(block.rest)
    assert options is not None
    cwd = work / (options["dir"] or ".")
    cwd.mkdir(parents=True, exist_ok=True)
    if options["fixture"]:
        FIXTURES[options["fixture"]](cwd)
    code = _localised(block.code, server.url)
    if block.language == "sh":
        command = ["bash", "-eo", "pipefail", "-c", code]
    else:  # kept apart from the directory, which may be a code bundle
        script = work / ".blocks" / f"readme_line_{block.line}.py"
        script.parent.mkdir(exist_ok=True)
        script.write_text(code)
        command = [sys.executable, str(script)]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=600)
    said = f"README.md:{block.line} ({block.language}) printed:\n{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, f"exit {result.returncode}; {said}"
    if block.language == "python":  # a snippet prints what it got back
        assert result.stdout.strip() not in ("", "None"), f"no answer; {said}"
    if options["expect"]:  # the CLI says some of it on stderr
        assert options["expect"] in result.stdout + result.stderr, \
            f"expected {options['expect']!r}; {said}"


def test_the_readme_runs(readme_server: StratusServer, tmp_path: Path) -> None:
    work = tmp_path / "work"
    shutil.copytree(ROOT / "examples", work / "repo" / "examples",
                    ignore=shutil.ignore_patterns("weights.safetensors", "__pycache__"))
    env = {**readme_server.env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
                                         f"{os.environ.get('PATH', '')}"}
    ran = 0
    for block in BLOCKS:
        if block.action == "file":
            path = work / block.rest.strip()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.code)
        elif block.action == "run":
            _run(block, work, readme_server, env)
            ran += 1
    assert ran >= 8
