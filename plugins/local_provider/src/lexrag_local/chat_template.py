"""Rendering chat messages into a Llama-3 prompt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lexrag.types import ChatMessage

#: The Llama-3 instruct template, as the tiny test model and HTTP mode without a tokenizer use it.
LLAMA3_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)


def _role(message: ChatMessage) -> str:
    # Llama-3 knows system/user/assistant/ipython; OpenAI's "developer" is a system turn.
    return "system" if message.role == "developer" else message.role


def as_dicts(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    return [{"role": _role(m), "content": m.content or ""} for m in messages]


def render_llama3(messages: Sequence[ChatMessage], *, bos: str = "<|begin_of_text|>") -> str:
    """The prompt the Llama-3 template renders, without needing a tokenizer."""
    parts = [bos]
    for message in messages:
        content = (message.content or "").strip()
        parts.append(f"<|start_header_id|>{_role(message)}<|end_header_id|>\n\n{content}<|eot_id|>")
    parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(parts)


def render(messages: Sequence[ChatMessage], tokenizer: Any | None) -> str:
    """The prompt text: the tokenizer's own chat template when it has one, else Llama-3's."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        text: str = tokenizer.apply_chat_template(
            as_dicts(messages), tokenize=False, add_generation_prompt=True
        )
        return text
    bos = getattr(tokenizer, "bos_token", None) or "<|begin_of_text|>"
    return render_llama3(messages, bos=bos)


__all__ = ["LLAMA3_CHAT_TEMPLATE", "as_dicts", "render", "render_llama3"]
