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


class RawPrompt(list[ChatMessage]):
    """A raw prompt (``ProviderRequest.prompt``: ``/v1/completions``, ``/v1/generate`` with
    ``"raw": true``), marked as such by its type, never guessed from its text. It holds the
    prompt as one user message, so it passes for messages wherever those are taken;
    :func:`render` returns ``text`` as it is, with the tokenizer's BOS put in front, as a
    completions server tokenizes its prompt (one already there is not doubled)."""

    def __init__(self, text: str) -> None:
        super().__init__([ChatMessage(role="user", content=text)])
        self.text = text


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
    A :class:`RawPrompt` is its text as it is, after the BOS token."""
    if isinstance(messages, RawPrompt):
        return with_bos(messages.text, tokenizer)
    bos = getattr(tokenizer, "bos_token", None) or LLAMA3_BOS
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


def bos_of(tokenizer: Any | None) -> str:
    """The text the tokenizer puts in front of a text it encodes with its special tokens
    (Llama-3: ``<|begin_of_text|>``; ``""`` for one that adds none, as GPT-2-style ChatML
    tokenizers), or Llama-3's BOS without a tokenizer."""
    if tokenizer is None:
        return LLAMA3_BOS
    ids = tokenizer("", add_special_tokens=True)["input_ids"]
    return str(tokenizer.decode(ids)) if ids else ""


def with_bos(text: str, tokenizer: Any | None) -> str:
    bos = bos_of(tokenizer)
    return text if not bos or text.startswith(bos) else bos + text


def without_bos(text: str, tokenizer: Any | None) -> str:
    """``text`` without its leading BOS: a completions server puts its own in front."""
    bos = bos_of(tokenizer)
    return text[len(bos) :] if bos and text.startswith(bos) else text


__all__ = [
    "LLAMA3_BOS",
    "LLAMA3_CHAT_TEMPLATE",
    "RawPrompt",
    "as_dicts",
    "bos_of",
    "render",
    "with_bos",
    "without_bos",
]
