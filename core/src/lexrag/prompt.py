"""The RAG prompt: the one place its wording lives (overridable by ``[prompt]``).

The layout follows the Frog model card's RAG use: one system message holding the
instructions and the numbered passages, each under its legal citation, then the
conversation as the client sent it. The answer cites passages as ``[n]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pydantic import BaseModel, ConfigDict

from .types import ChatMessage, Source, Usage

DEFAULT_SYSTEM_PROMPT = (
    "Bạn là trợ lý pháp lý tiếng Việt. Hãy trả lời câu hỏi của người dùng chỉ dựa trên "
    "các đoạn văn bản pháp luật được đánh số dưới đây. Khi dùng thông tin từ một đoạn, "
    "hãy trích dẫn số của đoạn đó trong ngoặc vuông, ví dụ [1]. Nếu các đoạn không đủ để "
    "trả lời, hãy nói rõ là không tìm thấy quy định phù hợp; không được bịa đặt."
)

DEFAULT_PASSAGE_TEMPLATE = "[{index}] {citation}\n{text}"

DEFAULT_CONTEXT_HEADER = "Các đoạn văn bản pháp luật liên quan:"


class PromptSettings(BaseModel):
    """The ``[prompt]`` table: the wording of the RAG prompt."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    system: str = DEFAULT_SYSTEM_PROMPT
    context_header: str = DEFAULT_CONTEXT_HEADER
    passage: str = DEFAULT_PASSAGE_TEMPLATE
    """Format of one passage: ``{index}``, ``{citation}`` and ``{text}`` are filled in."""


#: Tokens a chat template spends per message on role headers and separators
#: (Llama 3 spends 4-5; counted generously so the budget errs on the safe side).
MESSAGE_OVERHEAD_TOKENS = 8

TokenCounter = Callable[[str], int]


def estimate_tokens(text: str) -> int:
    """A safe over-estimate for a tokenizer we cannot run: Llama-3's BPE spends about one
    token per 3-4 characters of Vietnamese, so half the character count errs high."""
    return len(text) // 2 + 1


def estimate_usage(messages: Sequence[ChatMessage], completion: str) -> Usage:
    """Usage counted with :func:`estimate_tokens`, for a provider that has no tokenizer or
    an upstream that reported none; marked ``estimated``."""
    prompt_tokens = sum(estimate_tokens(m.content or "") for m in messages)
    return Usage.of(prompt_tokens, estimate_tokens(completion) if completion else 0, estimated=True)


def render_passage(settings: PromptSettings, source: Source) -> str:
    return settings.passage.format(index=source.index, citation=source.citation, text=source.text)


def system_message(settings: PromptSettings, passages: Sequence[Source], client_system: str = "") -> str:
    """The system message: instructions, then the numbered passages under their citations,
    then whatever system text the client sent itself."""
    parts = [settings.system]
    if passages:
        parts.append(
            settings.context_header + "\n\n" + "\n\n".join(render_passage(settings, p) for p in passages)
        )
    if client_system:
        parts.append(client_system)
    return "\n\n".join(parts)


def fit_passages(
    settings: PromptSettings,
    messages: Sequence[ChatMessage],
    passages: Sequence[Source],
    *,
    budget: int,
    count: TokenCounter,
) -> list[Source]:
    """The best-ranked passages (a prefix of ``passages``) whose prompt fits ``budget``
    tokens, renumbered from 1. The conversation and instructions are counted first."""
    used = count(settings.system) + count(settings.context_header)
    used += sum(count(m.content or "") + MESSAGE_OVERHEAD_TOKENS for m in messages)
    used += MESSAGE_OVERHEAD_TOKENS
    kept: list[Source] = []
    for source in passages:
        numbered = source.model_copy(update={"index": len(kept) + 1})
        cost = count(render_passage(settings, numbered)) + 2
        if used + cost > budget:
            break
        used += cost
        kept.append(numbered)
    return kept


def build_messages(
    settings: PromptSettings, messages: Sequence[ChatMessage], passages: Sequence[Source]
) -> list[ChatMessage]:
    """The messages sent to the provider: one system message (the client's own system
    turns folded into it, as Llama chat templates expect a single one) then the turns."""
    client_system = "\n\n".join(
        m.content or "" for m in messages if m.role in ("system", "developer") and m.content
    )
    turns = [m for m in messages if m.role not in ("system", "developer")]
    system = ChatMessage(role="system", content=system_message(settings, passages, client_system))
    return [system, *turns]


__all__ = [
    "DEFAULT_CONTEXT_HEADER",
    "DEFAULT_PASSAGE_TEMPLATE",
    "DEFAULT_SYSTEM_PROMPT",
    "MESSAGE_OVERHEAD_TOKENS",
    "PromptSettings",
    "TokenCounter",
    "build_messages",
    "estimate_tokens",
    "estimate_usage",
    "fit_passages",
    "system_message",
]
