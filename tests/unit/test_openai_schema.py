"""Validation of the OpenAI-compatible request bodies and their internal invocations."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stratus.gateway.adapters.openai_schema import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    InvalidParameter,
    parse,
)


def body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def test_completion_defaults_follow_openai() -> None:
    request = parse(CompletionRequest, body(model="m", prompt="hi"))
    assert request.max_tokens == 16
    assert request.invocation("hi") == {
        "op": "completion", "prompt": "hi", "max_tokens": 16, "temperature": 1.0, "top_p": 1.0,
        "top_k": None, "stop": [], "seed": None,
    }


def test_prompt_forms() -> None:
    assert parse(CompletionRequest, body(model="m", prompt="a")).prompts() == ["a"]
    assert parse(CompletionRequest, body(model="m", prompt=[1, 2, 3])).prompts() == [[1, 2, 3]]
    assert parse(CompletionRequest, body(model="m", prompt=["a", "b"])).prompts() == ["a", "b"]
    assert parse(CompletionRequest, body(model="m", prompt=[[1], [2]])).prompts() == [[1], [2]]
    with pytest.raises(InvalidParameter) as caught:
        parse(CompletionRequest, body(model="m", prompt=[])).prompts()
    assert caught.value.param == "prompt"


def test_a_stop_string_becomes_a_list() -> None:
    request = parse(CompletionRequest, body(model="m", prompt="x", stop="\n", seed=3, top_k=5))
    invocation = request.invocation("x")
    assert invocation["stop"] == ["\n"] and invocation["seed"] == 3 and invocation["top_k"] == 5


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"temperature": 2.5}, "temperature"), ({"temperature": -1}, "temperature"),
     ({"top_p": 0}, "top_p"), ({"top_p": 1.5}, "top_p"), ({"max_tokens": 0}, "max_tokens"),
     ({"n": 2}, "n"), ({"stop": ["a"] * 5}, "stop"), ({"stop": [""]}, "stop"),
     ({"logprobs": 3}, "logprobs"), ({"echo": True}, "echo"),
     ({"presence_penalty": 0.5}, "presence_penalty"), ({"top_k": -1}, "top_k"),
     ({"seed": "x"}, "seed"), ({"model": ""}, "model")],
)
def test_invalid_parameters_name_their_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        parse(CompletionRequest, body(**{"model": "m", "prompt": "x", **fields}))
    assert caught.value.param == param
    assert caught.value.status == 400


def test_missing_fields_and_bad_json() -> None:
    with pytest.raises(InvalidParameter) as caught:
        parse(CompletionRequest, body(model="m"))
    assert caught.value.param == "prompt"
    with pytest.raises(InvalidParameter) as bad:
        parse(ChatRequest, b"{nope")
    assert "not valid JSON" in bad.value.message
    with pytest.raises(InvalidParameter):
        parse(ChatRequest, b"[1, 2]")


def test_chat_messages_and_max_completion_tokens() -> None:
    request = parse(ChatRequest, body(
        model="m", max_completion_tokens=7,
        messages=[{"role": "system", "content": "Be kind."},
                  {"role": "user", "content": [{"type": "text", "text": "Hi "},
                                                {"type": "text", "text": "there"}]}],
    ))
    invocation = request.invocation()
    assert invocation["op"] == "chat" and invocation["max_tokens"] == 7
    assert invocation["messages"] == [{"role": "system", "content": "Be kind."},
                                      {"role": "user", "content": "Hi there"}]
    assert request.max_tokens is None  # chat: up to the context window unless asked
    with pytest.raises(InvalidParameter) as caught:
        parse(ChatRequest, body(model="m", messages=[]))
    assert caught.value.param == "messages"
    with pytest.raises(InvalidParameter):
        parse(ChatRequest, body(model="m", messages=[{"role": "wizard", "content": "x"}]))


def test_stream_options() -> None:
    request = parse(ChatRequest, body(model="m", messages=[{"role": "user", "content": "x"}],
                                      stream=True, stream_options={"include_usage": True}))
    assert request.stream and request.include_usage()


def test_embedding_inputs() -> None:
    assert parse(EmbeddingRequest, body(model="e", input="a")).inputs() == ["a"]
    assert parse(EmbeddingRequest, body(model="e", input=["a", "b"])).inputs() == ["a", "b"]
    assert parse(EmbeddingRequest, body(model="e", input=[5, 6])).inputs() == [[5, 6]]
    assert parse(EmbeddingRequest, body(model="e", input="a", encoding_format="base64"))
    with pytest.raises(InvalidParameter) as caught:
        parse(EmbeddingRequest, body(model="e", input="a", dimensions=8))
    assert caught.value.param == "dimensions"
    with pytest.raises(InvalidParameter):
        parse(EmbeddingRequest, body(model="e", input=[])).inputs()
    with pytest.raises(InvalidParameter) as fmt:
        parse(EmbeddingRequest, body(model="e", input="a", encoding_format="int8"))
    assert fmt.value.param == "encoding_format"
