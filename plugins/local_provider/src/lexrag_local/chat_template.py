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


def prerendered(messages: Sequence[ChatMessage], bos: str) -> str | None:
    """The prompt itself when the messages are one user turn that is already a rendered
    prompt: what the seed's ``/v1/generate`` receives from a client in HTTP mode."""
    if len(messages) == 1 and messages[0].role == "user":
        content = messages[0].content or ""
        if content.startswith((bos, "<|start_header_id|>")):
            return content
    return None


def render(messages: Sequence[ChatMessage], tokenizer: Any | None) -> str:
    """The prompt text: the tokenizer's own chat template when it has one, else Llama-3's;
    a prompt that is already rendered is kept as it is (rendering it twice would nest it)."""
    bos = getattr(tokenizer, "bos_token", None) or "<|begin_of_text|>"
    ready = prerendered(messages, bos)
    if ready is not None:
        return ready
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        text: str = tokenizer.apply_chat_template(
            as_dicts(messages), tokenize=False, add_generation_prompt=True
        )
        return text
    return render_llama3(messages, bos=bos)


__all__ = ["LLAMA3_CHAT_TEMPLATE", "as_dicts", "prerendered", "render", "render_llama3"]
