"""The GGUF import and ``make demo-llm`` end to end: the real SmolLM2-135M-Instruct GGUF pushed
through the real CLI (dequantised to a transformers directory), deployed with ``--llm`` at zero
replicas on a real server, and asked a factual question through the official openai client.
Bad files and a missing extra get a one-line error, never a traceback."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from server import STRATUS, StratusServer
from smollm2 import CHAT_FILES, llm_demo, smollm2_gguf

# The demo's setup imports 513 MB (dequantise, encrypt, store), then a language model starts
# from zero and answers: minutes on two cores shared with other workers. The suite's 180 s is
# a guard against hangs; this module's work needs more than that to finish, not to be judged.
pytestmark = pytest.mark.timeout(420)


def flat(text: str) -> str:
    """The CLI's output with rich's line wrapping undone."""
    return " ".join(text.split())


@dataclass(frozen=True)
class DemoRun:
    answers: list[Any]
    printed: str  # what the demo printed (its own lines, not its subprocesses')
    cli_printed: str  # what its `stratus` commands printed, to a file as to a pipe


@contextlib.contextmanager
def subprocess_output_into(path: Path) -> Iterator[None]:
    """File descriptors 1 and 2 (what a child process inherits) point at ``path`` meanwhile:
    not a terminal, whether or not pytest captures."""
    saved = [os.dup(1), os.dup(2)]
    with open(path, "wb") as file:
        os.dup2(file.fileno(), 1)
        os.dup2(file.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


@pytest.fixture(scope="module")
def demo_run(server: StratusServer, tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """The demo's own run against the test server (one import for the whole module). One
    intra-op thread: the suite's workers share two cores, and two threads each then crawl."""
    printed = io.StringIO()
    cli_log = tmp_path_factory.mktemp("demo") / "cli.log"
    with contextlib.redirect_stdout(printed), subprocess_output_into(cli_log):
        answers = llm_demo().run_demo(server.url, server.key, server.env, smollm2_gguf(),
                                      deploy_flags=("--threads", "1"))
    cli_printed = cli_log.read_text(errors="replace")
    sys.stdout.write(printed.getvalue() + cli_printed)  # still in the test's captured output
    return DemoRun(list(answers), printed.getvalue(), cli_printed)


@pytest.fixture(scope="module")
def answers(demo_run: DemoRun) -> list[Any]:
    return demo_run.answers


def test_the_demo_answers_a_factual_question_from_zero_replicas(answers: list[Any]) -> None:
    first = answers[0]
    assert first.cold_start, "the demo deploys at zero replicas: its first request starts one"
    assert "Paris" in first.text
    assert 0 < first.completion_tokens < 96 and first.first_token_s <= first.total_s
    assert "Tokyo" in answers[1].text and not answers[1].cold_start


def test_the_demo_prints_the_answer_the_cold_start_and_tokens_per_second(
        demo_run: DemoRun) -> None:
    printed, (cold, warm) = demo_run.printed, demo_run.answers
    assert f"A: {cold.text}" in printed and f"A: {warm.text}" in printed
    figures = re.search(r"cold start: first token after (\d+\.\d\d) s \(the replica loaded "
                        r"the model in (\d+\.\d\d) s\)\n", printed)
    assert figures is not None, printed  # and no "[a replica was already up]" after it
    assert figures[1] == f"{cold.first_token_s:.2f}"
    assert 0 < float(figures[2]) <= float(figures[1]), "the load is part of the first token's wait"
    assert f"warm: first token after {warm.first_token_s * 1000:.0f} ms" in printed
    for answer in (cold, warm):
        assert answer.tokens_per_s > 0
        assert f"{answer.completion_tokens} tokens at {answer.tokens_per_s:.1f} tokens/s" \
            in printed, printed


def test_the_import_prints_whole_lines_and_no_bar_to_a_pipe(demo_run: DemoRun) -> None:
    printed = demo_run.cli_printed
    assert "importing SmolLM2-135M-Instruct.Q4_1.gguf: transformers dequantises it" in printed
    assert "imported a llama model (Q4_1 quantisation)" in printed, printed
    assert "pushed smollm2@1.0.0 (transformers, " in printed
    # transformers' own tqdm bar for the dequantisation: a redraw per tensor, joined by \r
    assert "de-quantizing" not in printed and "\r" not in printed, printed[:2000]
    assert "" not in printed.splitlines(), "no blank lines around the messages"


def test_the_store_holds_the_import_as_a_float32_transformers_directory(
        answers: list[Any], server: StratusServer) -> None:
    demo = llm_demo()
    assert demo.MODEL in server.cli("models", "ls").stdout
    record = json.loads(server.cli("models", "show", f"{demo.MODEL}@1.0.0").stdout)
    assert record["format"] == "transformers"
    assert record["source_format"] == "gguf"
    assert set(record["files"]) == CHAT_FILES
    # 135M parameters in float32: about 5.5 times the 98 MB 4-bit file
    assert 500 * 2**20 < record["files"]["model.safetensors"]["size"] < 560 * 2**20


def test_a_truncated_or_foreign_file_is_refused_in_one_line(
        server: StratusServer, tmp_path: Path) -> None:
    data = smollm2_gguf().read_bytes()
    cases = {"half.gguf": (data[: len(data) // 2], "truncated"),
             "header.gguf": (data[:1000], "truncated or damaged"),
             "text.gguf": (b"this is not a model\n", "is not a GGUF file")}
    for name, (content, expected) in cases.items():
        (tmp_path / name).write_bytes(content)
        done = server.cli("models", "push", "bad-gguf", str(tmp_path / name), "--version", "1.0.0",
                          check=False)
        assert done.returncode == 1, done.stderr
        assert expected in flat(done.stderr) and name in flat(done.stderr)
        assert "Traceback" not in done.stderr
    assert "bad-gguf" not in server.cli("models", "ls").stdout


def test_without_the_extra_the_error_names_it(server: StratusServer, tmp_path: Path) -> None:
    # A `gguf` package that cannot be imported, as on an install without stratus[gguf].
    hidden = tmp_path / "hide" / "gguf"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('No module named gguf')\n")
    env = {**server.env, "PYTHONPATH": os.pathsep.join(
        [str(hidden.parent), *filter(None, [server.env.get("PYTHONPATH")])])}
    done = subprocess.run([STRATUS, "models", "push", "no-extra", str(smollm2_gguf()), "--version",
                           "1.0.0"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "pip install 'stratus[gguf]'" in flat(done.stderr)
    assert "Traceback" not in done.stderr
