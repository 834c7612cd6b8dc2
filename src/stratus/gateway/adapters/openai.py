"""OpenAI-compatible adapters: ``/v1/completions``, ``/v1/chat/completions`` (streamed as
server-sent events with ``stream: true``) and ``/v1/embeddings``. ``model`` names a deployment
made with ``--llm`` or ``--embeddings``; the request becomes one internal invocation of it and
the server's events come back in OpenAI's shapes."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from stratus.dispatch.dispatcher import Choice, Invocation, InvocationResult
from stratus.errors import NotFound, StratusError
from stratus.gateway.adapters.openai_schema import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    InvalidParameter,
    parse,
)
from stratus.gateway.http import Call, Reply, openai_error_body, stratus_headers
from stratus.gateway.state import Components
from stratus.gateway.streaming import InvocationStream, StreamReply
from stratus.runtime import wire


class ModelNotFound(NotFound):
    type = "model_not_found"


@dataclass(frozen=True, slots=True)
class Generation:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class Shape:
    """How one endpoint spells its objects: completions and chat differ only here."""

    chat: bool
    id: str
    model: str
    created: int

    def chunk(self, text: str | None, finish_reason: str | None, role: bool = False) -> bytes:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if text:
                delta["content"] = text
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None,
                                      "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None,
                      "finish_reason": finish_reason}
        return _sse(self._object([choice], chunk=True))

    def usage_chunk(self, usage: dict[str, int]) -> bytes:
        return _sse({**self._object([], chunk=True), "usage": usage})

    def response(self, generations: list[Generation]) -> bytes:
        choices = []
        for index, generation in enumerate(generations):
            if self.chat:
                message = {"role": "assistant", "content": generation.text}
                choices.append({"index": index, "message": message, "logprobs": None,
                                "finish_reason": generation.finish_reason})
            else:
                choices.append({"index": index, "text": generation.text, "logprobs": None,
                                "finish_reason": generation.finish_reason})
        usage = _usage(sum(g.prompt_tokens for g in generations),
                       sum(g.completion_tokens for g in generations))
        return json.dumps({**self._object(choices, chunk=False), "usage": usage}).encode()

    def _object(self, choices: list[dict[str, Any]], chunk: bool) -> dict[str, Any]:
        kind = ("chat.completion" if self.chat else "text_completion") + \
            (".chunk" if chunk and self.chat else "")
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "choices": choices}


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _count(parts: Components, request_id: str, prompt: int, completion: int) -> None:
    """Hand an invocation's tokens to the usage meter, for its record."""
    if parts.usage is not None:
        parts.usage.tokens(request_id, prompt, completion)


def _choose(parts: Components, call: Call, model: str, api: str, what: str) -> Choice:
    """The revision of ``model`` that will serve this request, checked to speak ``api``: the
    check and the call concern the same revision, whatever the traffic split draws."""
    pinned = call.pinned_revision()
    try:
        choice = parts.dispatcher.choose(call.principal.namespace, model, pinned, call.headers,
                                         call.body)
    except NotFound:
        raise ModelNotFound(f"The model '{model}' does not exist") from None
    pool = choice.pool
    if pool.api == "native":
        raise ModelNotFound(f"The model '{model}' does not exist: deployment {model!r} "
                            "serves the native and v2 APIs, not OpenAI's")
    if pool.api != api:
        raise InvalidParameter(f"model '{model}' is an {pool.api} deployment and does not serve "
                               f"{what}", "model")
    return choice


def _invocation(call: Call, payload: dict[str, Any]) -> Invocation:
    return Invocation(kind=wire.KIND_JSON, payload=json.dumps(payload).encode(),
                      request_id=call.request_id, protocol="openai", priority=call.priority(),
                      deadline=call.deadline())


def _shape(call: Call, model: str, chat: bool) -> Shape:
    prefix = "chatcmpl-" if chat else "cmpl-"
    return Shape(chat, prefix + call.request_id, model, int(time.time()))


async def _generate(parts: Components, choice: Choice,
                    invocation: Invocation) -> tuple[Generation, InvocationResult]:
    events: list[bytes] = []
    result = await parts.dispatcher.run(
        choice, replace(invocation, on_chunk=lambda kind, payload: events.append(payload))
    )
    texts: list[str] = []
    final: dict[str, Any] = {}
    for raw in events:
        event = json.loads(raw)
        if event.get("text"):
            texts.append(event["text"])
        if "finish_reason" in event:
            final = event
    usage = final.get("usage", {})
    generation = Generation("".join(texts), final.get("finish_reason") or "stop",
                            int(usage.get("prompt_tokens", 0)),
                            int(usage.get("completion_tokens", 0)))
    _count(parts, invocation.request_id, generation.prompt_tokens, generation.completion_tokens)
    return generation, result


async def _answer(parts: Components, shape: Shape, choice: Choice,
                  invocations: list[Invocation]) -> Reply:
    """Every prompt of a request runs on the one revision chosen (and checked) for it."""
    if len(invocations) == 1:  # no task to gather: the common case stays one coroutine
        done = [await _generate(parts, choice, invocations[0])]
    else:
        done = await asyncio.gather(*(_generate(parts, choice, inv) for inv in invocations))
    first = done[0][1]
    return Reply(200, shape.response([g for g, _ in done]),
                 stratus_headers(first.revision, first.cold_start, first.attempts))


async def _stream(parts: Components, call: Call, shape: Shape, choice: Choice,
                  invocation: Invocation, include_usage: bool) -> StreamReply:
    stream = InvocationStream(parts.dispatcher, choice, invocation)
    # Errors before the first event (unknown model, context too long, overload) keep their
    # HTTP status; after it, they can only travel as an event.
    first = await stream.next_item()
    if first is None:
        await stream.result()

    async def events() -> AsyncIterator[bytes]:
        try:
            if shape.chat:
                yield shape.chunk(None, None, role=True)
            finish, usage = "stop", _usage(0, 0)
            item = first
            while item is not None:
                event = json.loads(item[1])
                if event.get("text"):
                    yield shape.chunk(event["text"], None)
                if "finish_reason" in event:
                    finish = event["finish_reason"]
                    counts = event.get("usage", {})
                    usage = _usage(int(counts.get("prompt_tokens", 0)),
                                   int(counts.get("completion_tokens", 0)))
                    _count(parts, call.request_id, usage["prompt_tokens"],
                           usage["completion_tokens"])
                item = await stream.next_item()
            await stream.result()
            yield shape.chunk(None, finish)
            if include_usage:
                yield shape.usage_chunk(usage)
            yield b"data: [DONE]\n\n"
        except StratusError as exc:
            yield b"data: " + openai_error_body(exc, call.request_id) + b"\n\n"
        finally:
            await stream.close()

    return StreamReply(200, events(), stream.headers())


async def completions(parts: Components, call: Call) -> Reply | StreamReply:
    request = parse(CompletionRequest, call.body, parts.settings.max_json_depth)
    choice = _choose(parts, call, request.model, "llm", "completions")
    prompts = request.prompts()
    shape = _shape(call, request.model, chat=False)
    invocations = [_invocation(call, request.invocation(p)) for p in prompts]
    if request.stream:
        if len(invocations) != 1:
            raise InvalidParameter("a streamed completion takes one prompt", "prompt")
        return await _stream(parts, call, shape, choice, invocations[0], request.include_usage())
    return await _answer(parts, shape, choice, invocations)


async def chat_completions(parts: Components, call: Call) -> Reply | StreamReply:
    request = parse(ChatRequest, call.body, parts.settings.max_json_depth)
    choice = _choose(parts, call, request.model, "llm", "chat completions")
    shape = _shape(call, request.model, chat=True)
    invocation = _invocation(call, request.invocation())
    if request.stream:
        return await _stream(parts, call, shape, choice, invocation, request.include_usage())
    return await _answer(parts, shape, choice, [invocation])


async def embeddings(parts: Components, call: Call) -> Reply:
    request = parse(EmbeddingRequest, call.body, parts.settings.max_json_depth)
    choice = _choose(parts, call, request.model, "embeddings", "embeddings")
    result = await parts.dispatcher.run(choice, _invocation(call, {"input": request.inputs()}))
    answer = json.loads(result.payload)
    data = []
    for index, vector in enumerate(answer["data"]):
        embedding: Any = vector
        if request.encoding_format == "base64":
            embedding = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = int(answer.get("prompt_tokens", 0))
    _count(parts, call.request_id, tokens, 0)
    body = {"object": "list", "data": data, "model": request.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return Reply(200, json.dumps(body).encode(),
                 stratus_headers(result.revision, result.cold_start, result.attempts))
