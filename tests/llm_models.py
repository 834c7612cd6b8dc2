"""Tiny random-weight language and embedding models, built locally for the LLM tests.

Nothing is downloaded: tokenizers are trained on ``tests/data/corpus.txt`` and weights are
seeded, so every build of the same kind gives the same files.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as hf_logging

from stratus.llm.sampling import SamplingParams
from stratus.llm.server import LLMServer
from stratus.sdk.context import Context

CORPUS = Path(__file__).parent / "data" / "corpus.txt"
EOS = "<|endoftext|>"
VOCAB_SIZE = 1000
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _bpe_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(CORPUS)], trainer)
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, eos_token=EOS, bos_token=EOS)


def _wordpiece_tokenizer() -> PreTrainedTokenizerFast:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=VOCAB_SIZE, special_tokens=specials, show_progress=False)
    tok.train([str(CORPUS)], trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
    )


def _save(directory: Path, model_class: Any, config: Any, seed: int, tokenizer: Any) -> Path:
    """Build ``model_class(config)`` with seeded random weights and save it with its tokenizer."""
    # transformers logs a warning per unused config key and draws progress bars; tests need neither
    logging.getLogger("transformers").setLevel(logging.ERROR)
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model_class(config).eval().save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save_pretrained(str(directory))
    return directory


def build_tiny_gpt2(directory: Path, *, chat_template: bool = False, n_positions: int = 256) -> Path:
    """A 2-layer GPT-2 with random weights; a wide initializer keeps greedy near-ties rare."""
    tokenizer = _bpe_tokenizer()
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    eos = int(tokenizer.convert_tokens_to_ids(EOS))  # type: ignore[arg-type]
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=n_positions, n_embd=64, n_layer=2, n_head=4,
        initializer_range=0.2, bos_token_id=eos, eos_token_id=eos,
    )
    return _save(directory, GPT2LMHeadModel, config, 1234, tokenizer)


def build_tiny_llama(directory: Path, *, n_positions: int = 256) -> Path:
    """A 2-layer Llama (rotary positions, grouped-query attention) with random weights."""
    tokenizer = _bpe_tokenizer()
    eos = int(tokenizer.convert_tokens_to_ids(EOS))  # type: ignore[arg-type]
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=n_positions,
        initializer_range=0.2, bos_token_id=eos, eos_token_id=eos, tie_word_embeddings=False,
    )
    return _save(directory, LlamaForCausalLM, config, 4321, tokenizer)


def build_tiny_bert(directory: Path, *, max_positions: int = 64) -> Path:
    """A 2-layer BERT encoder with random weights and a WordPiece tokenizer, for embeddings."""
    tokenizer = _wordpiece_tokenizer()
    tokenizer.model_max_length = max_positions
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id,
    )
    return _save(directory, BertModel, config, 99, tokenizer)


_BUILDERS: dict[str, Callable[..., Path]] = {
    "gpt2": build_tiny_gpt2, "gpt2-chat": build_tiny_gpt2, "llama": build_tiny_llama, "bert": build_tiny_bert,
}
_BUILT: dict[tuple[int, str], Path] = {}


def tiny_model(factory: Any, kind: str) -> Path:
    """The directory of a tiny model of ``kind``, built once per pytest session (``factory`` is
    ``tmp_path_factory``)."""
    key = (id(factory), kind)
    if key not in _BUILT:
        options = {"chat_template": True} if kind == "gpt2-chat" else {}
        _BUILT[key] = _BUILDERS[kind](factory.mktemp(f"llm-{kind}"), **options)
    return _BUILT[key]


def make_context(model_dir: Path, name: str = "tiny", **config: Any) -> Context:
    """A replica ``Context`` declaring one model, as the replica runtime would build it."""
    entry: dict[str, Any] = {
        "name": name, "version": "1", "stage": None, "ref": f"{name}@1", "dir": str(model_dir),
        "format": "transformers", "meta": {}, "files": [],
    }
    return Context(
        deployment="llm-test", namespace="default", revision=1, replica_id="r-test",
        config={"model": name, **config}, env={}, memory_mb=None, timeout_s=60.0,
        logger=logging.getLogger("stratus.test.llm"), threads=1, models=[entry],
    )


async def generated_ids(server: LLMServer, ids: list[int], max_tokens: int,
                        params: SamplingParams | None = None) -> list[int]:
    """Every token the engine makes for the prompt ``ids`` (greedy unless ``params`` say)."""
    seq = server.engine.submit(ids, params or SamplingParams(temperature=0.0), max_tokens,
                               asyncio.get_running_loop())
    out: list[int] = []
    try:
        while True:
            tokens, finish = await seq.next_tokens()
            out += tokens
            if finish:
                return out
    finally:
        server.engine.cancel(seq)
