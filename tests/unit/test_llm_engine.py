"""The continuous-batching engine and ``LLMServer`` on real tiny models (GPT-2 and Llama)."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from llm_models import generated_ids, make_context, tiny_model
from stratus.errors import BadRequest, ContextLengthExceeded, HandlerError, Shed
from stratus.llm.sampling import SamplingParams
from stratus.llm.server import LLMServer

PROMPTS = ["The", "Once upon a time there was", "The sea, which had been restless all week,",
           "A", "Potatoes should be planted", "Hello", "Four score and seven years ago our fathers",
           "What is the capital of France? Paris. What is"]


@pytest.fixture
def make_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    made: list[LLMServer] = []

    def make(kind: str = "gpt2", directory: Path | None = None, **config: Any) -> LLMServer:
        server = LLMServer(make_context(directory or tiny_model(tmp_path_factory, kind), **config))
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


async def run(server: LLMServer, **request: Any) -> tuple[str, dict[str, Any], int]:
    """(text, final event, number of text events) of one request."""
    request.setdefault("op", "completion")
    pieces: list[str] = []
    final: dict[str, Any] = {}
    async for event in server(request):
        if "text" in event:
            assert event["text"], "no empty text events"
            assert not final, "text after the final event"
            pieces.append(event["text"])
        else:
            final = event
    return "".join(pieces), final, len(pieces)


async def token_ids(server: LLMServer, prompt: str, max_tokens: int, **params: Any) -> list[int]:
    """The engine's raw token ids for a prompt (greedy unless told otherwise)."""
    params.setdefault("temperature", 0.0)
    return await generated_ids(server, server.tokenizer.encode(prompt), max_tokens,
                               SamplingParams(**params))


async def wait_until(condition: Any, limit_s: float = 10.0) -> None:
    async with asyncio.timeout(limit_s):
        # The engine thread changes the state polled here; it has no event to wait on.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


# -- batching gives the same answers ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
async def test_eight_concurrent_greedy_sequences_match_each_alone(make_server: Any, kind: str) -> None:
    server = make_server(kind, max_num_seqs=8)
    alone = [await token_ids(server, p, 24) for p in PROMPTS]
    together = await asyncio.gather(*(token_ids(server, p, 24) for p in PROMPTS))
    assert together == alone
    texts_alone = [await run(server, prompt=p, max_tokens=24, temperature=0) for p in PROMPTS]
    texts_together = await asyncio.gather(*(run(server, prompt=p, max_tokens=24, temperature=0)
                                            for p in PROMPTS))
    assert [t[:2] for t in texts_together] == [t[:2] for t in texts_alone]


async def test_sequences_joining_and_leaving_mid_run_match_each_alone(make_server: Any) -> None:
    server = make_server(max_num_seqs=8)
    lengths = [40, 5, 17, 30, 9, 25, 12, 33]  # rows leave at different steps
    alone = [await token_ids(server, p, n) for p, n in zip(PROMPTS, lengths, strict=True)]

    async def staggered(i: int) -> list[int]:
        await asyncio.sleep(0.002 * i)
        return await token_ids(server, PROMPTS[i], lengths[i])

    first = asyncio.create_task(token_ids(server, PROMPTS[0], lengths[0]))
    await wait_until(lambda: server.stats()["running"] == 1)
    rest = await asyncio.gather(*(staggered(i) for i in range(1, 8)))
    assert [await first, *rest] == alone


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
async def test_queued_sequences_reuse_the_rows_of_finished_ones(make_server: Any, kind: str) -> None:
    # Four rows for twelve sequences: each newcomer takes the row of one that just finished.
    server = make_server(kind, max_num_seqs=4)
    prompts = [*PROMPTS, "The clockmaker", "In a narrow street", "Rain.", "Dear Margaret,"]
    lengths = [3 + (7 * i) % 20 for i in range(len(prompts))]
    alone = [await token_ids(server, p, n) for p, n in zip(prompts, lengths, strict=True)]
    together = await asyncio.gather(*(token_ids(server, p, n)
                                      for p, n in zip(prompts, lengths, strict=True)))
    assert together == alone
    assert server.engine._cache.rows <= 4


async def test_the_same_seed_gives_the_same_sample_alone_or_batched(make_server: Any) -> None:
    server = make_server()
    request = {"prompt": "Once upon", "max_tokens": 16, "temperature": 1.0, "top_p": 0.9, "seed": 7}
    alone = await run(server, **request)
    assert (await run(server, **request))[:2] == alone[:2]  # events may group tokens differently
    others = [run(server, prompt=p, max_tokens=16, temperature=1.0) for p in PROMPTS[:4]]
    batched, *_ = await asyncio.gather(run(server, **request), *others)
    assert batched[:2] == alone[:2]
    different = {(await run(server, **{**request, "seed": s}))[0] for s in range(4)}
    assert len(different) > 1


# -- how sequences finish ------------------------------------------------------------------


async def test_max_tokens_finishes_with_length(make_server: Any) -> None:
    server = make_server()
    text, final, events = await run(server, prompt="The sea", max_tokens=7, temperature=0)
    assert final["finish_reason"] == "length"
    assert final["usage"] == {"prompt_tokens": len(server.tokenizer.encode("The sea")),
                              "completion_tokens": 7}
    assert events >= 1 and text


async def test_no_max_tokens_runs_to_the_context_window(make_server: Any) -> None:
    server = make_server()
    prompt = list(range(10, 250))  # 240 tokens of a 256-token window
    _, final, _ = await run(server, prompt=prompt, max_tokens=None, temperature=0)
    assert final == {"finish_reason": "length", "usage": {"prompt_tokens": 240, "completion_tokens": 16}}


async def test_eos_finishes_with_stop(make_server: Any, tmp_path: Path,
                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    # Make the 4th greedy token an end-of-sequence token through generation_config.json.
    reference = make_server()
    ids = await token_ids(reference, "The sea", 6)
    eos = ids[3]
    directory = tmp_path / "eos-model"
    shutil.copytree(tiny_model(tmp_path_factory, "gpt2"), directory)
    generation = json.loads((directory / "generation_config.json").read_text())
    generation["eos_token_id"] = [0, eos]
    (directory / "generation_config.json").write_text(json.dumps(generation))
    server = make_server(directory=directory)
    expected = server.tokenizer.decode(ids[: ids.index(eos)])
    text, final, _ = await run(server, prompt="The sea", max_tokens=20, temperature=0)
    assert final["finish_reason"] == "stop"
    assert final["usage"]["completion_tokens"] == ids.index(eos) + 1
    assert text == expected


async def test_a_stop_string_split_across_tokens(make_server: Any) -> None:
    server = make_server()
    ids = await token_ids(server, PROMPTS[1], 12)
    pieces = [server.tokenizer.decode(ids[:i]) for i in range(len(ids) + 1)]
    # A stop made of the end of token 4's text and the start of token 5's.
    boundary = len(pieces[5])
    full = pieces[-1]
    stop = full[boundary - 2 : boundary + 2]
    assert len(stop) == 4
    text, final, _ = await run(server, prompt=PROMPTS[1], max_tokens=12, temperature=0, stop=[stop])
    assert final["finish_reason"] == "stop"
    assert text == full[: full.index(stop)]
    assert stop not in text
    assert final["usage"]["completion_tokens"] <= 6


# -- capacity, cancellation, queueing -------------------------------------------------------


async def next_event(stream: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    return await asyncio.wait_for(anext(stream), 10)


async def test_closing_a_stream_frees_its_place_for_a_queued_one(make_server: Any) -> None:
    server = make_server(max_num_seqs=1)
    long = server({"op": "completion", "prompt": "The", "max_tokens": 200, "temperature": 0})
    await next_event(long)
    queued = asyncio.create_task(run(server, prompt="A", max_tokens=3, temperature=0))
    await wait_until(lambda: server.stats()["waiting"] == 1)
    assert not queued.done()
    await long.aclose()
    _, final, _ = await asyncio.wait_for(queued, 10)
    assert final["finish_reason"] == "length"
    await wait_until(lambda: server.stats()["running"] == 0)
    assert server.stats()["tokens_budget_used"] == 0


async def test_cancelling_the_consumer_task_frees_its_place(make_server: Any) -> None:
    server = make_server(max_num_seqs=1)
    long = asyncio.create_task(run(server, prompt="The", max_tokens=200, temperature=0))
    await wait_until(lambda: server.stats()["running"] == 1)
    waiting = asyncio.create_task(run(server, prompt="The", max_tokens=200, temperature=0))
    await wait_until(lambda: server.stats()["waiting"] == 1)
    waiting.cancel()  # a queued sequence can leave too
    await wait_until(lambda: server.stats()["waiting"] == 0)
    long.cancel()
    with pytest.raises(asyncio.CancelledError):
        await long
    await wait_until(lambda: server.stats() == {"running": 0, "waiting": 0, "tokens_budget_used": 0,
                                                "tokens_budget": server.engine._options.max_num_tokens})
    _, final, _ = await run(server, prompt="A", max_tokens=2, temperature=0)
    assert final["usage"]["completion_tokens"] == 2


async def test_beyond_the_queue_bound_requests_are_shed(make_server: Any) -> None:
    server = make_server(max_num_seqs=1, max_queue=1)
    first = server({"op": "completion", "prompt": "The", "max_tokens": 200, "temperature": 0})
    await next_event(first)
    second = asyncio.create_task(run(server, prompt="A", max_tokens=2, temperature=0))
    await wait_until(lambda: server.stats()["waiting"] == 1)
    with pytest.raises(Shed):
        await run(server, prompt="B", max_tokens=2)
    await first.aclose()
    assert (await asyncio.wait_for(second, 10))[1]["finish_reason"] == "length"


async def test_the_token_budget_queues_requests(make_server: Any) -> None:
    server = make_server(max_num_seqs=4, max_num_tokens=200)
    first = server({"op": "completion", "prompt": "The", "max_tokens": 150, "temperature": 0})
    await next_event(first)
    assert server.stats()["tokens_budget_used"] == 151
    second = asyncio.create_task(run(server, prompt="The", max_tokens=100, temperature=0))
    await wait_until(lambda: server.stats()["waiting"] == 1)
    await first.aclose()
    assert (await asyncio.wait_for(second, 10))[1]["usage"]["completion_tokens"] == 100
    with pytest.raises(BadRequest, match="token budget"):
        await run(server, prompt="The", max_tokens=220)


# -- errors -----------------------------------------------------------------------------------


async def test_context_length_exceeded(make_server: Any) -> None:
    server = make_server()
    with pytest.raises(ContextLengthExceeded) as caught:
        await run(server, prompt=list(range(250)), max_tokens=10)
    assert caught.value.message == (
        "This model's maximum context length is 256 tokens. However, you requested 260 tokens "
        "(250 in the prompt, 10 in the completion). Please reduce the length of the prompt or "
        "completion.")
    assert caught.value.type == "context_length_exceeded" and caught.value.status == 400
    with pytest.raises(ContextLengthExceeded, match="256 tokens"):
        await run(server, prompt=list(range(256)))
    with pytest.raises(ContextLengthExceeded, match="in the messages"):
        await run(server, op="chat", messages=[{"role": "user", "content": "word " * 300}], max_tokens=1)
    assert server.stats()["running"] == 0


@pytest.mark.parametrize(("request_", "match"), [
    ({"op": "translate", "prompt": "x"}, "op"),
    ({"prompt": 3}, "prompt"),
    ({"prompt": [1, "2"]}, "prompt"),
    ({"prompt": [10**9]}, "vocabulary"),
    ({"prompt": "x", "temperature": -1}, "temperature"),
    ({"op": "chat", "messages": []}, "messages"),
])
async def test_bad_requests_fail_before_the_first_event(make_server: Any, request_: dict[str, Any],
                                                        match: str) -> None:
    server = make_server()
    with pytest.raises(BadRequest, match=match):
        await run(server, **request_)


async def test_an_empty_prompt_starts_from_the_start_token(make_server: Any) -> None:
    server = make_server()
    _, final, _ = await run(server, prompt="", max_tokens=3, temperature=0)
    assert final["usage"] == {"prompt_tokens": 1, "completion_tokens": 3}


async def test_a_model_failure_fails_the_batch_and_the_engine_recovers(make_server: Any) -> None:
    server = make_server()
    original = server.model.forward
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected fault")
        return original(*args, **kwargs)

    server.model.forward = flaky
    with pytest.raises(HandlerError, match="injected fault"):
        await run(server, prompt="The", max_tokens=10)
    assert server.stats()["running"] == 0
    _, final, _ = await run(server, prompt="The", max_tokens=4, temperature=0)
    assert final["usage"]["completion_tokens"] == 4


# -- chat -----------------------------------------------------------------------------------


async def test_chat_uses_the_template_or_the_default_format(make_server: Any) -> None:
    messages = [{"role": "user", "content": "Hi"}]
    plain = make_server("gpt2")
    _, final, _ = await run(plain, op="chat", messages=messages, max_tokens=3, temperature=0)
    assert final["usage"]["prompt_tokens"] == len(plain.tokenizer.encode("user: Hi\nassistant:"))
    templated = make_server("gpt2-chat")
    _, final, _ = await run(templated, op="chat", messages=messages, max_tokens=3, temperature=0)
    expected = templated.tokenizer.encode("<|user|>Hi\n<|assistant|>", add_special_tokens=False)
    assert final["usage"]["prompt_tokens"] == len(expected)
    chat_text = (await run(plain, op="chat", messages=messages, max_tokens=5, temperature=0))[0]
    same = await run(plain, prompt="user: Hi\nassistant:", max_tokens=5, temperature=0)
    assert chat_text == same[0]


def test_stats_and_config_defaults(make_server: Any) -> None:
    server = make_server()
    assert server.context_length == 256
    assert server.stats() == {"running": 0, "waiting": 0, "tokens_budget_used": 0,
                              "tokens_budget": 16 * 256}
    with pytest.raises(ValueError, match="max_num_seqs"):
        make_server(max_num_seqs=0)
    with pytest.raises(ValueError, match="dtype"):
        make_server(dtype="int8")


async def test_bfloat16_weights(make_server: Any) -> None:
    server = make_server(dtype="bfloat16")
    assert next(server.model.parameters()).dtype == torch.bfloat16
    _, final, _ = await run(server, prompt="The sea", max_tokens=5, temperature=0.7, seed=1)
    assert final["usage"]["completion_tokens"] == 5
