"""Text handling around the engine: stop strings, incremental detokenization, chat prompts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from llm_models import tiny_model
from stratus.errors import BadRequest
from stratus.llm.chat import chat_prompt_ids, default_chat_prompt
from stratus.llm.detok import REPLACEMENT, IncrementalDetokenizer
from stratus.llm.stops import StopMatcher


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return AutoTokenizer.from_pretrained(str(tiny_model(tmp_path_factory, "gpt2")))


@pytest.fixture(scope="module")
def chat_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return AutoTokenizer.from_pretrained(str(tiny_model(tmp_path_factory, "gpt2-chat")))


# -- stop strings --------------------------------------------------------------------------


def test_without_stops_text_passes_through() -> None:
    m = StopMatcher([])
    assert m.feed("abc") == "abc"
    assert m.flush() == ""


def test_a_stop_inside_one_delta() -> None:
    m = StopMatcher(["END"])
    assert m.feed("hello END world") == "hello "
    assert m.stopped
    assert m.feed("more") == ""
    assert m.flush() == ""


def test_a_stop_split_across_deltas_is_held_then_dropped() -> None:
    m = StopMatcher(["STOP"])
    assert m.feed("abc ST") == "abc "
    assert m.feed("O") == ""
    assert m.feed("P and more") == ""
    assert m.stopped


def test_held_text_that_turns_out_not_to_be_a_stop_is_emitted() -> None:
    m = StopMatcher(["STOP"])
    assert m.feed("x ST") == "x "
    assert m.feed("ART") == "START"
    assert m.feed("S") == ""
    assert m.flush() == "S"
    assert not m.stopped


def test_the_earliest_stop_wins() -> None:
    m = StopMatcher(["bb", "a"])
    assert m.feed("xxbba") == "xx"


def test_a_stop_split_over_many_one_character_deltas() -> None:
    m = StopMatcher(["\n\nQ:"])
    out = "".join(m.feed(ch) for ch in "answer\n\nQ: next")
    assert out == "answer" and m.stopped


def test_overlapping_prefixes() -> None:
    m = StopMatcher(["aab"])
    assert m.feed("aa") == ""
    assert m.feed("a") == "a"  # "aaa": only the last "aa" may still start "aab"
    assert m.feed("b") == ""
    assert m.stopped


# -- incremental detokenization --------------------------------------------------------------

TEXTS = [
    "The lighthouse keeper climbed the steps.",
    "Greetings: привет, γειά σου, こんにちは, 你好 🙂🚀 crème brûlée",  # noqa: RUF001
    "€12 or £10 — “quotes” … 21°C",
    "語彙にない文字 ✓→←",
]


@pytest.mark.parametrize("text", TEXTS)
def test_deltas_rebuild_the_text_and_never_split_a_character(tokenizer: Any, text: str) -> None:
    ids = tokenizer.encode(text)
    prompt = tokenizer.encode("Prompt:")
    d = IncrementalDetokenizer(tokenizer, prompt)
    deltas = [d.push(i) for i in ids]
    deltas.append(d.flush())
    assert "".join(deltas) == text
    assert all(REPLACEMENT not in delta for delta in deltas)


def test_multibyte_characters_are_held_until_complete(tokenizer: Any) -> None:
    ids = tokenizer.encode("你")
    assert len(ids) > 1  # the tiny vocabulary splits it into byte tokens
    d = IncrementalDetokenizer(tokenizer, [])
    assert [d.push(i) for i in ids[:-1]] == [""] * (len(ids) - 1)
    assert d.push(ids[-1]) == "你"


def test_an_unfinished_character_is_flushed_at_the_end(tokenizer: Any) -> None:
    ids = tokenizer.encode("a你")
    d = IncrementalDetokenizer(tokenizer, [])
    pieces = [d.push(i) for i in ids[:-1]]
    assert "".join(pieces) == "a"
    assert d.flush() == REPLACEMENT


def test_special_tokens_have_no_text(tokenizer: Any) -> None:
    d = IncrementalDetokenizer(tokenizer, [])
    assert d.push(tokenizer.eos_token_id) == ""
    assert d.push(tokenizer.encode(" sea")[0]) != ""


# -- chat prompts ------------------------------------------------------------------------------

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]


def test_the_default_chat_format(tokenizer: Any) -> None:
    text = default_chat_prompt(MESSAGES)
    assert text == "system: Be brief.\nuser: Hello\nassistant:"
    assert chat_prompt_ids(tokenizer, MESSAGES) == tokenizer.encode(text)


def test_the_tokenizer_chat_template_is_used(chat_tokenizer: Any) -> None:
    expected = "<|system|>Be brief.\n<|user|>Hello\n<|assistant|>"
    ids = chat_prompt_ids(chat_tokenizer, MESSAGES)
    assert chat_tokenizer.decode(ids) == expected


@pytest.mark.parametrize("messages", [
    [], "hi", [{"role": "user"}], [{"role": "", "content": "x"}], [{"role": "user", "content": 3}],
    ["user: hi"],
])
def test_invalid_messages(tokenizer: Any, messages: Any) -> None:
    with pytest.raises(BadRequest, match="messages"):
        chat_prompt_ids(tokenizer, messages)


def test_model_files_are_complete(tmp_path_factory: pytest.TempPathFactory) -> None:
    directory = tiny_model(tmp_path_factory, "gpt2")
    names = {p.name for p in Path(directory).iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
