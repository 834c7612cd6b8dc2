"""Chat messages to prompt token ids: the tokenizer's chat template, or Stratus's default format.

The default format, for tokenizers without a template, is one ``"<role>: <content>\\n"`` line
per message followed by ``"assistant:"``, the cue for the model to answer.
"""

from __future__ import annotations

from typing import Any

from stratus.errors import BadRequest

GENERATION_CUE = "assistant:"


def validate_messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list of {role, content} objects")
    checked: list[dict[str, str]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"messages[{i}] must be an object with role and content")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not role:
            raise BadRequest(f"messages[{i}].role must be a non-empty string")
        if not isinstance(content, str):
            raise BadRequest(f"messages[{i}].content must be a string")
        checked.append({"role": role, "content": content})
    return checked


def default_chat_prompt(messages: list[dict[str, str]]) -> str:
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + GENERATION_CUE


def chat_prompt_ids(tokenizer: Any, messages: Any) -> list[int]:
    """Token ids of the prompt for ``messages``, ending where the assistant's reply begins."""
    checked = validate_messages(messages)
    if getattr(tokenizer, "chat_template", None):
        try:
            text = tokenizer.apply_chat_template(checked, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # templates raise for conversations they reject (role order...)
            raise BadRequest(f"the model's chat template rejected these messages: {exc}") from exc
        # The template writes its own special tokens (BOS...), so the encoder must not add more.
        return list(tokenizer.encode(str(text), add_special_tokens=False))
    return list(tokenizer.encode(default_chat_prompt(checked)))
