"""Continuous batching: a GPT-2-small-sized model (124M parameters, random weights, CPU) served
by Stratus's LLM engine against Hugging Face ``generate`` one request at a time and statically
batched, all on this machine in one run.

    .venv/bin/python bench/llm.py [--streams 16] [--tokens 128] [--rounds 3] [--json]

* sequential: ``model.generate`` on one prompt at a time (greedy, exactly ``--tokens`` new
  tokens), in a fresh process with the same thread count as the replica;
* static: one ``model.generate`` over all ``--streams`` prompts, left-padded;
* stratus: ``stratus deploy --llm`` (max_num_seqs = streams), then ``--streams`` concurrent
  streaming ``/v1/completions`` requests (a burst), and ``--streams`` closed-loop clients
  for ``--rounds`` requests each (steady load). Tokens/s counts completion tokens from each
  stream's ``usage``; TTFT is the time from sending a request to its first text chunk.
  The idle TTFT is the median of requests sent one at a time to the idle server. Last,
  ``--streams * --rounds`` requests arrive open-loop (Poisson, seeded) at the rate that keeps
  ``--streams`` sequences running at the burst's throughput.

The model is ``GPT2Config()`` (12 layers, 768 wide, 50,257 tokens) with seeded random weights
and a synthetic word-level tokenizer of the same vocabulary size (every id decodes to a word),
built once into ``bench/results/llm-model``. Results: ``bench/results/llm-<ts>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import time
from pathlib import Path
from typing import Any

from common import (
    MAIN_VENV,
    RESULTS_DIR,
    log,
    machine_info,
    markdown_table,
    percentile,
    publish,
)
from stratus_target import StratusServer

MODEL_DIR = RESULTS_DIR / "llm-model"
THREADS = os.cpu_count() or 2


def build_model(directory: Path) -> Path:
    """Random GPT-2 small plus a word-level tokenizer; skipped when already built."""
    if (directory / "model.safetensors").exists() and (directory / "tokenizer.json").exists():
        return directory
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    config = GPT2Config()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(directory, safe_serialization=True)
    vocab = {f"w{i}": i for i in range(config.vocab_size - 1)}
    vocab["<|endoftext|>"] = config.vocab_size - 1
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>",
                                      unk_token="w0", model_max_length=config.n_positions)
    wrapped.save_pretrained(directory)
    log(f"built a {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M-parameter GPT-2 "
        f"in {directory}")
    return directory


def prompts(count: int) -> list[str]:
    """Prompts of 16 to 46 words, different for each stream."""
    return [" ".join(f"w{(7 * i + 13 * j) % 50000 + 1}" for j in range(16 + (i * 2) % 31))
            for i in range(count)]


# -- Hugging Face baselines (run in a child process, with the server stopped) -----------


def run_baselines(streams: int, tokens: int, sequential_runs: int) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(THREADS)
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    tokenizer.padding_side = "left"
    tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR).eval()
    texts = prompts(streams)
    common = {"do_sample": False, "max_new_tokens": tokens, "min_new_tokens": tokens,
              "pad_token_id": tokenizer.eos_token_id}
    with torch.inference_mode():
        warm = tokenizer(texts[0], return_tensors="pt")
        model.generate(**warm, **{**common, "max_new_tokens": 4, "min_new_tokens": 4})
        first_token = []
        for text in texts[:sequential_runs]:
            batch = tokenizer(text, return_tensors="pt")
            started = time.perf_counter()
            model.generate(**batch, **{**common, "max_new_tokens": 1, "min_new_tokens": 1})
            first_token.append(time.perf_counter() - started)
        started = time.perf_counter()
        for text in texts[:sequential_runs]:
            model.generate(**tokenizer(text, return_tensors="pt"), **common)
        sequential_s = time.perf_counter() - started
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        started = time.perf_counter()
        out = model.generate(**batch, **common)
        static_s = time.perf_counter() - started
    generated = (out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0]
    return {
        "sequential": {"requests": sequential_runs, "seconds": sequential_s,
                       "tokens_per_s": sequential_runs * tokens / sequential_s,
                       "ttft_median_s": percentile(first_token, 50)},
        "static": {"requests": streams, "seconds": static_s, "tokens_per_s": generated / static_s},
    }


# -- Stratus ---------------------------------------------------------------------------


async def stream_once(client: Any, prompt: str, tokens: int) -> dict[str, float]:
    body = {"model": "bench-llm", "prompt": prompt, "max_tokens": tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first: float | None = None
    completion = 0
    async with client.stream("POST", "/v1/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {await response.aread()!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(str(event["error"]))
            if first is None and any(c.get("text") for c in event.get("choices", ())):
                first = time.perf_counter()
            if event.get("usage"):
                completion = int(event["usage"]["completion_tokens"])
    ended = time.perf_counter()
    return {"start": started, "ttft": (first or ended) - started, "end": ended,
            "tokens": completion}


async def measure_stratus(server: StratusServer, streams: int, tokens: int,
                          rounds: int) -> dict[str, Any]:
    import httpx

    texts = prompts(streams)
    limits = httpx.Limits(max_connections=streams * 2)
    async with httpx.AsyncClient(base_url=server.base_url, headers=server.auth_headers(),
                                 timeout=600, limits=limits) as client:
        for text in texts[:2]:
            await stream_once(client, text, 8)
        idle = [await stream_once(client, text, 8) for text in texts[:8]]
        log(f"stratus idle TTFT median {percentile([r['ttft'] for r in idle], 50):.3f}s")

        started = time.perf_counter()
        burst = await asyncio.gather(*(stream_once(client, t, tokens) for t in texts))
        burst_s = time.perf_counter() - started
        log(f"stratus burst: {sum(r['tokens'] for r in burst)} tokens in {burst_s:.1f}s")

        async def closed_loop(index: int) -> list[dict[str, float]]:
            await asyncio.sleep(index * 0.25)  # staggered, so requests join a running batch
            return [await stream_once(client, texts[(index + r) % streams], tokens)
                    for r in range(rounds)]

        started = time.perf_counter()
        steady_runs = await asyncio.gather(*(closed_loop(i) for i in range(streams)))
        steady_s = time.perf_counter() - started
        # Open loop: Poisson arrivals at the rate that keeps `streams` sequences running
        # at the burst's throughput, as serving benchmarks (vLLM's) measure TTFT under load.
        rate = (sum(r["tokens"] for r in burst) / burst_s) / tokens
        arrivals = random.Random(0)
        offsets, at = [], 0.0
        for _ in range(streams * rounds):
            offsets.append(at)
            at += arrivals.expovariate(rate)

        async def arrive(index: int, offset: float) -> dict[str, float]:
            await asyncio.sleep(offset)
            return await stream_once(client, texts[index % streams], tokens)

        started = time.perf_counter()
        poisson = await asyncio.gather(*(arrive(i, o) for i, o in enumerate(offsets)))
        poisson_s = time.perf_counter() - started
    steady = [run for runs in steady_runs for run in runs]
    # Under load: requests that started while the other clients were all running.
    window_start = max(runs[0]["start"] for runs in steady_runs)
    window_end = min(runs[-1]["start"] for runs in steady_runs)
    loaded = [r for r in steady if window_start <= r["start"] <= window_end] or steady
    return {
        "idle_ttft_s": [r["ttft"] for r in idle],
        "burst": {"seconds": burst_s, "tokens": sum(r["tokens"] for r in burst),
                  "ttft_s": [r["ttft"] for r in burst]},
        "steady": {"seconds": steady_s, "tokens": sum(r["tokens"] for r in steady),
                   "ttft_s": [r["ttft"] for r in loaded], "requests": len(steady)},
        # TTFT counts the requests after the first `streams`, once the batch has filled up.
        "poisson": {"seconds": poisson_s, "tokens": sum(r["tokens"] for r in poisson),
                    "ttft_s": [r["ttft"] for r in poisson[streams:]], "rate_per_s": rate,
                    "requests": len(poisson)},
    }


def run_stratus(streams: int, tokens: int, rounds: int) -> dict[str, Any]:
    server = StratusServer("stratus-llm")
    server.start()
    try:
        server.cli(["models", "push", "bench-gpt2", str(MODEL_DIR), "--version", "1.0.0"],
                    timeout=900)
        config = json.dumps({"max_num_seqs": streams})
        server.cli(["deploy", "--llm", "bench-gpt2@1.0.0", "--name", "bench-llm",
                     "--min-replicas", "1", "--max-replicas", "1", "--threads", str(THREADS),
                     "--timeout", "900", "--config", config], timeout=900)
        return asyncio.run(measure_stratus(server, streams, tokens, rounds))
    finally:
        server.stop()


def report(results: dict[str, Any], tokens: int) -> str:
    sequential = results["baselines"]["sequential"]
    static = results["baselines"]["static"]
    stratus = results["stratus"]
    idle = percentile(stratus["idle_ttft_s"], 50)
    rows = [
        ["HF generate, sequential", f"{sequential['tokens_per_s']:.1f}", "1.00x", "-", "-"],
        ["HF generate, static batch", f"{static['tokens_per_s']:.1f}",
         f"{static['tokens_per_s'] / sequential['tokens_per_s']:.2f}x", "-", "-"],
    ]
    for phase in ("burst", "steady", "poisson"):
        data = stratus[phase]
        rate = data["tokens"] / data["seconds"]
        ttft = data["ttft_s"]
        rows.append([f"stratus, continuous ({phase})", f"{rate:.1f}",
                     f"{rate / sequential['tokens_per_s']:.2f}x",
                     f"{percentile(ttft, 50):.3f} / {percentile(ttft, 99):.3f}",
                     f"{percentile(ttft, 50) / idle:.2f}x"])
    table = markdown_table(["system", "tokens/s", "vs sequential", "TTFT p50 / p99 s",
                            "TTFT p50 / idle"], rows)
    return (f"{table}\n\nidle TTFT: stratus median {idle:.3f}s; HF generate (prefill + 1 "
            f"token) median {sequential['ttft_median_s']:.3f}s; {tokens} new tokens per stream")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sequential-runs", type=int, default=4)
    parser.add_argument("--baselines-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.baselines_only:
        print(json.dumps(run_baselines(args.streams, args.tokens, args.sequential_runs)))
        return
    build_model(MODEL_DIR)
    log("HF generate baselines (separate process)")
    child = subprocess.run(
        [str(MAIN_VENV / "bin" / "python"), __file__, "--baselines-only",
         "--streams", str(args.streams), "--tokens", str(args.tokens),
         "--sequential-runs", str(args.sequential_runs)],
        check=True, capture_output=True, text=True,
    )
    baselines = json.loads(child.stdout.strip().splitlines()[-1])
    log(f"baselines: {json.dumps(baselines)}")
    stratus = run_stratus(args.streams, args.tokens, args.rounds)
    results = {"machine": machine_info(), "streams": args.streams, "tokens": args.tokens,
               "rounds": args.rounds, "threads": THREADS, "baselines": baselines,
               "stratus": stratus}
    publish("llm", results, report(results, args.tokens), args.json)

if __name__ == "__main__":
    main()
