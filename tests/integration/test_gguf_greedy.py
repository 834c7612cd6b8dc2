"""The engine's greedy tokens on the imported SmolLM2-135M-Instruct match Hugging Face
transformers' ``generate(do_sample=False)`` on the same weights, token for token: each chat
prompt alone, all of them in one batch of different lengths (left padding), and with
sequences joining a running batch. Llama's grouped-query attention and rotary positions are
what the engine's own KV cache and position ids must get right here."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from llm_models import generated_ids, make_context
from smollm2 import CHAT_FILES, smollm2_gguf
from stratus.llm.chat import chat_prompt_ids
from stratus.llm.server import LLMServer
from stratus.models.formats import prepare

MAX_NEW = 24
CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "You answer in one short sentence."},
     {"role": "user", "content": "Why is the sea salty? Explain it to a child who asked at the "
                                 "beach, with an example they can try at home."}],
    [{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "An apple."},
     {"role": "user", "content": "Another one?"}],
    [{"role": "user", "content": "Write a haiku about the sea."}],
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The GGUF imported once for the module, by the code ``stratus models push`` runs, from
    a download folder that also holds another model's config and tokenizer config: the
    import must read the GGUF's own (the first test checks it did)."""
    downloads = tmp_path_factory.mktemp("downloads")
    (downloads / "config.json").write_text('{"model_type": "gpt2", "n_layer": 1}')
    (downloads / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer"}')
    (downloads / "smollm2.gguf").symlink_to(smollm2_gguf())
    prepared = prepare(downloads / "smollm2.gguf")
    assert prepared.scratch is not None and prepared.format == "transformers"
    yield Path(prepared.scratch.name)
    prepared.cleanup()


@pytest.fixture(scope="module")
def llm(model_dir: Path) -> Iterator[LLMServer]:
    # One intra-op thread, as the replica of test_gguf.py: the suite's workers share two cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    server = LLMServer(make_context(model_dir, name="smollm2", max_num_seqs=8))
    yield server
    server.close()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def prompts(llm: LLMServer) -> list[list[int]]:
    return [chat_prompt_ids(llm.tokenizer, messages) for messages in CONVERSATIONS]


@pytest.fixture(scope="module")
def reference(llm: LLMServer, prompts: list[list[int]]) -> list[list[int]]:
    """transformers' greedy tokens for each prompt alone (no padding), up to and including EOS."""
    out = []
    with torch.inference_mode():
        for ids in prompts:
            batch = torch.tensor([ids])
            made = llm.model.generate(batch, attention_mask=torch.ones_like(batch), do_sample=False,
                                      num_beams=1, max_new_tokens=MAX_NEW)
            out.append(made[0, len(ids):].tolist())
    return out


async def engine_tokens(llm: LLMServer, ids: list[int], delay_s: float = 0.0) -> list[int]:
    await asyncio.sleep(delay_s)
    return await generated_ids(llm, ids, MAX_NEW)


def test_the_import_is_float32_safetensors_with_the_chat_template(model_dir: Path, llm: LLMServer) -> None:
    assert {p.name for p in model_dir.iterdir()} == CHAT_FILES
    with safe_open(str(model_dir / "model.safetensors"), "pt") as weights:
        dtypes = {weights.get_slice(name).get_dtype() for name in weights.keys()}  # noqa: SIM118
    assert dtypes == {"F32"}
    assert llm.model.config.model_type == "llama" and llm.model.config.num_hidden_layers == 30
    assert type(llm.tokenizer).__name__ != "BertTokenizer"
    assert llm.model.config.num_key_value_heads < llm.model.config.num_attention_heads  # GQA
    assert "<|im_start|>assistant" in llm.tokenizer.decode(chat_prompt_ids(llm.tokenizer, CONVERSATIONS[0]))
    assert llm.eos_ids == {llm.tokenizer.convert_tokens_to_ids("<|im_end|>")}


async def test_each_prompt_alone_matches_transformers(llm: LLMServer, prompts: list[list[int]],
                                                      reference: list[list[int]]) -> None:
    assert [await engine_tokens(llm, ids) for ids in prompts] == reference
    assert any(len(tokens) < MAX_NEW for tokens in reference), "some answer ends with EOS"
    assert "Paris" in llm.tokenizer.decode(reference[0])


async def test_one_batch_of_different_lengths_matches_transformers(
        llm: LLMServer, prompts: list[list[int]], reference: list[list[int]]) -> None:
    assert len({len(ids) for ids in prompts}) == len(prompts)
    together = await asyncio.gather(*(engine_tokens(llm, ids) for ids in prompts))
    assert together == reference


async def test_sequences_joining_a_running_batch_match_transformers(
        llm: LLMServer, prompts: list[list[int]], reference: list[list[int]]) -> None:
    # Each joins after the previous has decoded a few tokens: placed in an empty row or
    # appended, left-padded against rows whose caches are longer or shorter than its own.
    staggered = await asyncio.gather(*(engine_tokens(llm, ids, delay_s=0.3 * i)
                                       for i, ids in enumerate(prompts)))
    assert staggered == reference
