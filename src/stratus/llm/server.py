"""``LLMServer``: the deployment class a replica runs to serve a causal LM with streaming and batching.

It turns a request into prompt ids and sampling parameters, submits them to the engine, and
turns the tokens that come back into UTF-8-safe text deltas, stopping at stop strings.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

from stratus.errors import BadRequest, ContextLengthExceeded
from stratus.llm.chat import chat_prompt_ids
from stratus.llm.detok import IncrementalDetokenizer
from stratus.llm.engine import Engine, EngineOptions
from stratus.llm.loading import load_pretrained
from stratus.llm.sampling import SamplingParams
from stratus.llm.stops import StopMatcher
from stratus.sdk.context import Context
from stratus.sdk.deployment import deployment


def model_context_length(config: Any) -> int:
    """The model's context window from its config (``n_positions`` maps here for GPT-2)."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError("cannot tell the model's context length from its config; "
                     "set context_length in the deployment config")


def _positive_int(config: Mapping[str, Any], name: str, default: int) -> int:
    value = config.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"config {name} must be a positive integer, not {value!r}")
    return value


DTYPES = ("auto", "float32", "bfloat16", "float16")


def model_dtype(config: Mapping[str, Any]) -> str:
    """The weights' dtype: "auto" keeps the stored one; "bfloat16" is about twice as fast on
    CPUs with AVX512-BF16 or AMX, at bfloat16 precision."""
    dtype = config.get("dtype", "auto")
    if dtype not in DTYPES:
        raise ValueError(f"config dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    return str(dtype)


def engine_options(config: Mapping[str, Any], context_length: int) -> EngineOptions:
    """Engine caps from the deployment config, with the documented defaults."""
    seqs = _positive_int(config, "max_num_seqs", 16)
    queue = config.get("max_queue", 256)
    if isinstance(queue, bool) or not isinstance(queue, int) or queue < 0:
        raise ValueError(f"config max_queue must be a non-negative integer, not {queue!r}")
    return EngineOptions(
        max_num_seqs=seqs,
        max_num_tokens=_positive_int(config, "max_num_tokens", seqs * context_length),
        max_queue=queue,
        max_prefill_tokens=_positive_int(config, "max_prefill_tokens", 512),
    )


@deployment(max_concurrency=64, target_concurrency=16, timeout_s=600, threads=os.cpu_count() or 1)
class LLMServer:
    """Loads ``ctx.config["model"]`` with transformers and serves completion and chat requests."""

    def __init__(self, ctx: Context) -> None:
        self.tokenizer, self.model = load_pretrained(ctx, "AutoModelForCausalLM",
                                                     dtype=model_dtype(ctx.config))
        window = model_context_length(self.model.config)
        self.context_length = min(window, _positive_int(ctx.config, "context_length", window))
        self.eos_ids = self._eos_ids()
        pad = self.tokenizer.pad_token_id
        self.engine = Engine(self.model, eos_ids=self.eos_ids, context_length=self.context_length,
                             options=engine_options(ctx.config, self.context_length),
                             pad_id=pad if pad is not None else 0, logger=ctx.logger)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        for source in (configured, self.model.config.eos_token_id, self.tokenizer.eos_token_id):
            if isinstance(source, int):
                ids.add(source)
            elif isinstance(source, list):
                ids.update(i for i in source if isinstance(i, int))
        return ids

    def stats(self) -> dict[str, int]:
        return self.engine.stats()

    def close(self) -> None:
        self.engine.close()

    def _prompt_ids(self, request: Mapping[str, Any]) -> tuple[list[int], str]:
        op = request.get("op", "chat" if "messages" in request else "completion")
        if op == "chat":
            return chat_prompt_ids(self.tokenizer, request.get("messages")), "messages"
        if op != "completion":
            raise BadRequest(f"op must be 'completion' or 'chat', not {op!r}")
        prompt = request.get("prompt")
        if isinstance(prompt, str):
            ids = list(self.tokenizer.encode(prompt))
        elif isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            vocab = self.model.config.get_text_config().vocab_size
            bad = next((t for t in prompt if not 0 <= t < vocab), None)
            if bad is not None:
                raise BadRequest(f"prompt token {bad} is outside the vocabulary (0..{vocab - 1})")
            ids = list(prompt)
        else:
            raise BadRequest("prompt must be a string or a list of token ids")
        if not ids:
            # An empty prompt means "start of text", as in GPT-2: begin from the BOS/EOS token.
            start = self.tokenizer.bos_token_id
            if start is None:
                start = self.tokenizer.eos_token_id
            if start is None:
                raise BadRequest("prompt must not be empty")
            ids = [start]
        return ids, "prompt"

    def _max_tokens(self, prompt_tokens: int, params: SamplingParams, where: str) -> int:
        window = self.context_length
        if params.max_tokens is None:
            if prompt_tokens >= window:
                raise ContextLengthExceeded(
                    f"This model's maximum context length is {window} tokens. However, your {where} "
                    f"resulted in {prompt_tokens} tokens. Please reduce the length of the {where}.")
            return window - prompt_tokens
        total = prompt_tokens + params.max_tokens
        if prompt_tokens >= window or total > window:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {window} tokens. However, you requested "
                f"{total} tokens ({prompt_tokens} in the {where}, {params.max_tokens} in the "
                f"completion). Please reduce the length of the {where} or completion.")
        return params.max_tokens

    async def __call__(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        if not isinstance(request, dict):
            raise BadRequest("the request must be a JSON object")
        params = SamplingParams.from_request(request)
        prompt, where = self._prompt_ids(request)
        max_tokens = self._max_tokens(len(prompt), params, where)
        seq = self.engine.submit(prompt, params, max_tokens, asyncio.get_running_loop())
        detok = IncrementalDetokenizer(self.tokenizer, prompt)
        stops = StopMatcher(params.stop)
        completion_tokens = 0
        finish: str | None = None
        try:
            while finish is None:
                tokens, engine_finish = await seq.next_tokens()
                pieces: list[str] = []
                for token in tokens:
                    completion_tokens += 1
                    if engine_finish == "stop" and token in self.eos_ids:
                        break  # the EOS token has no text
                    pieces.append(stops.feed(detok.push(token)))
                    if stops.stopped:
                        finish = "stop"
                        break
                if finish is None and engine_finish is not None:
                    finish = engine_finish
                    pieces.append(stops.feed(detok.flush()))
                    pieces.append(stops.flush())
                    if stops.stopped:
                        finish = "stop"
                text = "".join(pieces)
                if text:
                    yield {"text": text}
        finally:
            # Finished, stopped, closed or cancelled: the engine frees the row at its next step.
            self.engine.cancel(seq)
        yield {"finish_reason": finish,
               "usage": {"prompt_tokens": len(prompt), "completion_tokens": completion_tokens}}
