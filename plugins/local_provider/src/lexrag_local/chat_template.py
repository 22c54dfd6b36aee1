"""Rendering chat messages into a prompt: the tokenizer's own chat template, else Llama-3's."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from lexrag import ChatMessage

#: Llama-3's beginning-of-text token, written by the template.
LLAMA3_BOS = "<|begin_of_text|>"

#: The Llama-3 instruct template: the tiny test model's, and what renders a prompt for a
#: tokenizer without a template or for HTTP mode without a tokenizer.
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


def prerendered(messages: Sequence[ChatMessage], bos: str) -> str | None:
    """The prompt itself when the messages are one user turn that is already a rendered
    prompt: what the seed's ``/v1/generate`` receives from a client in HTTP mode."""
    if len(messages) == 1 and messages[0].role == "user":
        content = messages[0].content or ""
        if content.startswith((bos, "<|start_header_id|>")):
            return content
    return None


@cache
def _llama3_template() -> Any:
    """``LLAMA3_CHAT_TEMPLATE`` compiled as transformers compiles chat templates."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(
        LLAMA3_CHAT_TEMPLATE
    )


def render(messages: Sequence[ChatMessage], tokenizer: Any | None) -> str:
    """The prompt text: the tokenizer's ``apply_chat_template`` with its own template, or
    with Llama-3's when it has none; Llama-3's through jinja2 when there is no tokenizer.
    A prompt that is already rendered is kept as it is (rendering it twice would nest it)."""
    bos = getattr(tokenizer, "bos_token", None) or LLAMA3_BOS
    ready = prerendered(messages, bos)
    if ready is not None:
        return ready
    conversation = as_dicts(messages)
    if tokenizer is None:
        text: str = _llama3_template().render(
            messages=conversation, bos_token=bos, add_generation_prompt=True
        )
        return text
    # A model directory without a template gets Llama-3's, with Llama-3's bos if it names none.
    fallback = (
        {}
        if getattr(tokenizer, "chat_template", None)
        else {"chat_template": LLAMA3_CHAT_TEMPLATE, "bos_token": bos}
    )
    text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True, **fallback)
    return text


__all__ = ["LLAMA3_BOS", "LLAMA3_CHAT_TEMPLATE", "as_dicts", "prerendered", "render"]
