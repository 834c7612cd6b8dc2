"""Loads the model a built-in server serves (named by ``ctx.config["model"]``) and its
tokenizer from the directory the model store laid out."""

from __future__ import annotations

from typing import Any

from stratus.sdk.context import Context


def load_pretrained(ctx: Context, auto_class: str, **kwargs: Any) -> tuple[Any, Any]:
    """(tokenizer, model in eval mode); ``auto_class`` names a transformers Auto class."""
    import transformers
    from transformers.utils import logging as hf_logging

    # Progress bars would garble the JSON-lines log.
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    path = ctx.model_path(ctx.config["model"])
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = getattr(transformers, auto_class).from_pretrained(path, **kwargs)
    return tokenizer, model.eval()
