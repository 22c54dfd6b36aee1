"""The RAG prompt: the one place its wording lives (overridable by ``[prompt]``).

A prompt *template* is one layout of the RAG prompt: one system message holding the
instructions and the numbered passages, each under its legal citation, then the
conversation as the client sent it. The answer cites passages as ``[n]``. Two are built in:

- ``default``: lexrag's own wording (``[prompt]`` ``system`` / ``context_header`` / ``passage``
  set it), what the ``openai`` and ``extractive`` providers get;
- ``frog``: the layout the Frog model (``phamhai/Llama-3.2-3B-Instruct-Frog``) was tuned on,
  from its model card: the card's Vietnamese system prompt, then ``Context:`` and the passages
  as ``Đoạn N: "…"``, with lexrag's ``[n]`` citation instruction added; the ``local``
  provider's default.

Each provider names its template (:attr:`lexrag.Provider.prompt_template`);
``[prompt.provider_templates]`` overrides it per provider, ``[prompt.templates.NAME]``
rewords a template or adds one (:meth:`PromptSettings.template_for`).

The card's question-rewriting prompt for multi-turn chats is here too
(:data:`FROG_REWRITE_INSTRUCTION`, :func:`rewrite_messages`), for query rewriting before
retrieval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .types import ChatMessage, Source, Usage

DEFAULT_SYSTEM_PROMPT = (
    "Bạn là trợ lý pháp lý tiếng Việt. Hãy trả lời câu hỏi của người dùng chỉ dựa trên "
    "các đoạn văn bản pháp luật được đánh số dưới đây. Khi dùng thông tin từ một đoạn, "
    "hãy trích dẫn số của đoạn đó trong ngoặc vuông, ví dụ [1]. Nếu các đoạn không đủ để "
    "trả lời, hãy nói rõ là không tìm thấy quy định phù hợp; không được bịa đặt."
)

DEFAULT_PASSAGE_TEMPLATE = "[{index}] {citation}\n{text}"

DEFAULT_CONTEXT_HEADER = "Các đoạn văn bản pháp luật liên quan:"

#: The Frog model card's recommended system prompt (its QnA, RAG and rewriting examples all
#: start with it), word for word.
FROG_SYSTEM_PROMPT = (
    "Bạn là một trợ lí Tiếng Việt nhiệt tình và trung thực. Hãy luôn trả lời một cách hữu ích "
    "nhất có thể, đồng thời giữ an toàn.\nNếu một câu hỏi không có ý nghĩa hoặc không hợp lý về "
    "mặt thông tin, hãy giải thích tại sao thay vì trả lời một điều gì đó không chính xác, vui "
    "lòng không chia sẻ thông tin sai lệch."
)

#: lexrag's grounding and ``[n]`` citation instruction, added after the card's prompt.
FROG_CITATION_INSTRUCTION = (
    "Hãy trả lời dựa vào các đoạn văn bản pháp luật trong phần Context. Khi dùng thông tin từ "
    "một đoạn, hãy trích dẫn số của đoạn đó trong ngoặc vuông, ví dụ [1]. Nếu các đoạn không đủ "
    "để trả lời, hãy nói rõ là không tìm thấy quy định phù hợp."
)

#: The card's context header and passage layout (``Đoạn 0: "…"`` there; numbered from 1
#: here so that ``Đoạn n`` is the ``[n]`` the answer cites).
FROG_CONTEXT_HEADER = "Context:"
FROG_PASSAGE_TEMPLATE = 'Đoạn {index}: "{citation}\n{text}"'

#: The card's question-rewriting instruction (its "Question Rewriting task"), word for word,
#: "đầu đủ" included: the user turn that asks the model to rewrite the last question of a
#: conversation into one that stands on its own. ``{question}`` is filled in; the
#: conversation goes into the system message (:func:`rewrite_messages`).
FROG_REWRITE_INSTRUCTION = (
    "Dựa vào đoạn hội thoại được cung cấp, viết lại câu nói của người dùng sao cho đầu đủ ý "
    "nhất có thể mà không bị sai lệch thông tin.\nCâu nói: {question}"
)


class PromptTemplate(BaseModel):
    """One layout of the RAG prompt's system message: ``system``, then ``context_header``
    and the passages (each rendered with ``passage``), then the client's own system text,
    joined by ``separator``."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    system: str = DEFAULT_SYSTEM_PROMPT
    context_header: str = DEFAULT_CONTEXT_HEADER
    passage: str = DEFAULT_PASSAGE_TEMPLATE
    """Format of one passage: ``{index}``, ``{citation}`` and ``{text}`` are filled in."""
    separator: str = "\n\n"
    """Between the instructions, the header, each passage and the client's system text."""


#: The built-in templates, by name.
BUILTIN_TEMPLATES: dict[str, PromptTemplate] = {
    "default": PromptTemplate(),
    "frog": PromptTemplate(
        system=FROG_SYSTEM_PROMPT + "\n" + FROG_CITATION_INSTRUCTION,
        context_header=FROG_CONTEXT_HEADER,
        passage=FROG_PASSAGE_TEMPLATE,
        separator="\n",
    ),
}


class TemplateOverride(BaseModel):
    """``[prompt.templates.NAME]``: the keys set replace the template's (a new name starts
    from ``default``)."""

    model_config = ConfigDict(extra="forbid")

    system: str | None = None
    context_header: str | None = None
    passage: str | None = None
    separator: str | None = None


class PromptSettings(PromptTemplate):
    """The ``[prompt]`` table: the ``default`` template's wording (``system``,
    ``context_header``, ``passage``, ``separator``), other templates' (``templates``) and which
    provider uses which (``provider_templates``)."""

    templates: dict[str, TemplateOverride] = Field(default_factory=dict)
    """``[prompt.templates.NAME]``: reword a built-in template (``frog``) or add one."""
    provider_templates: dict[str, str] = Field(default_factory=dict)
    """``[prompt.provider_templates]``: provider name → template name, overriding the
    provider's own choice (``local``: ``frog``; the others: ``default``)."""

    @model_validator(mode="after")
    def _known_templates(self) -> PromptSettings:
        known = self.template_names()
        for provider, name in self.provider_templates.items():
            if name not in known:
                raise ValueError(
                    f"provider_templates.{provider} = {name!r} names no template; "
                    f"use one of {', '.join(sorted(known))} or add [prompt.templates.{name}]"
                )
        return self

    def template_names(self) -> set[str]:
        return {*BUILTIN_TEMPLATES, *self.templates}

    def template(self, name: str) -> PromptTemplate:
        """The template called ``name``: ``default`` is this table's own wording; another
        built-in one, or one of ``templates``, with its ``[prompt.templates.NAME]`` keys."""
        if name == "default":
            base = PromptTemplate.model_validate(self.model_dump(include=set(PromptTemplate.model_fields)))
        elif name in BUILTIN_TEMPLATES:
            base = BUILTIN_TEMPLATES[name]
        elif name in self.templates:
            base = self.template("default")
        else:
            raise ValueError(
                f"prompt template {name!r} does not exist; use one of "
                f"{', '.join(sorted(self.template_names()))} or add [prompt.templates.{name}]"
            )
        override = self.templates.get(name)
        if override is None:
            return base
        return base.model_copy(update=override.model_dump(exclude_none=True))

    def template_for(self, provider: str, own: str = "default") -> PromptTemplate:
        """The template the provider called ``provider`` gets: its entry in
        ``[prompt.provider_templates]``, else ``own``, the template it names itself
        (:attr:`lexrag.Provider.prompt_template`)."""
        return self.template(self.provider_templates.get(provider, own))


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


def render_passage(template: PromptTemplate, source: Source) -> str:
    return template.passage.format(index=source.index, citation=source.citation, text=source.text)


def system_message(template: PromptTemplate, passages: Sequence[Source], client_system: str = "") -> str:
    """The system message: instructions, then the numbered passages under their citations,
    then whatever system text the client sent itself."""
    sep = template.separator
    parts = [template.system]
    if passages:
        parts.append(template.context_header + sep + sep.join(render_passage(template, p) for p in passages))
    if client_system:
        parts.append(client_system)
    return sep.join(parts)


def fit_passages(
    template: PromptTemplate,
    messages: Sequence[ChatMessage],
    passages: Sequence[Source],
    *,
    budget: int,
    count: TokenCounter,
) -> list[Source]:
    """The best-ranked passages (a prefix of ``passages``) whose prompt fits ``budget``
    tokens, renumbered from 1. The conversation and instructions are counted first."""
    used = count(template.system) + count(template.context_header)
    used += sum(count(m.content or "") + MESSAGE_OVERHEAD_TOKENS for m in messages)
    used += MESSAGE_OVERHEAD_TOKENS
    kept: list[Source] = []
    for source in passages:
        numbered = source.model_copy(update={"index": len(kept) + 1})
        cost = count(render_passage(template, numbered)) + 2
        if used + cost > budget:
            break
        used += cost
        kept.append(numbered)
    return kept


def build_messages(
    template: PromptTemplate, messages: Sequence[ChatMessage], passages: Sequence[Source]
) -> list[ChatMessage]:
    """The messages sent to the provider: one system message (the client's own system
    turns folded into it, as Llama chat templates expect a single one) then the turns.

    ``template`` is the provider's: ``settings.template_for(provider.name,
    provider.prompt_template)``; the ``[prompt]`` table itself is the ``default`` one."""
    client_system = "\n\n".join(
        m.content or "" for m in messages if m.role in ("system", "developer") and m.content
    )
    turns = [m for m in messages if m.role not in ("system", "developer")]
    system = ChatMessage(role="system", content=system_message(template, passages, client_system))
    return [system, *turns]


def rewrite_messages(history: Sequence[ChatMessage], question: str) -> list[ChatMessage]:
    """The Frog card's question-rewriting prompt, for retrieval in a multi-turn chat: the
    conversation so far (its user and assistant turns with text, as ``USER: …`` /
    ``ASSISTANT: …`` lines under ``Context:``) in the system message after
    :data:`FROG_SYSTEM_PROMPT`, then :data:`FROG_REWRITE_INSTRUCTION` with ``question``.
    The model answers with the question rewritten to stand on its own, which is what to
    search for."""
    lines = [
        f"{'USER' if m.role == 'user' else 'ASSISTANT'}: {(m.content or '').strip()}"
        for m in history
        if m.role in ("user", "assistant") and m.has_text
    ]
    system = "\n".join([FROG_SYSTEM_PROMPT, FROG_CONTEXT_HEADER, *lines])
    return [
        ChatMessage(role="system", content=system),
        ChatMessage(role="user", content=FROG_REWRITE_INSTRUCTION.format(question=question.strip())),
    ]


#: What ``lexrag phrasings write`` asks a model for each article: ``{n}`` short questions or
#: phrases in a layperson's words (4–14 words, specific to that article), one per line; the
#: document's title and the article (its heading and the start of its text) follow.
PHRASINGS_INSTRUCTION = (
    "Dưới đây là một điều luật. Hãy viết {n} câu hỏi hoặc cụm từ ngắn mà một người dân bình "
    "thường sẽ gõ khi cần tìm đúng điều luật này: mỗi câu từ 4 đến 14 từ, dùng từ ngữ đời thường "
    "của người không học luật thay cho thuật ngữ pháp lý, và nói về nội dung riêng của điều này "
    "chứ không chung chung. Viết mỗi câu trên một dòng, không đánh số, không giải thích gì thêm."
    "\n\nVăn bản: {title}\n{article}"
)


def phrasings_messages(title: str, article: str, n: int) -> list[ChatMessage]:
    """The prompt that asks a model for ``n`` everyday phrasings of one article (doc2query,
    for the ``phrasings`` retriever): :data:`FROG_SYSTEM_PROMPT`, then
    :data:`PHRASINGS_INSTRUCTION` with the document's ``title`` and the ``article`` text."""
    instruction = PHRASINGS_INSTRUCTION.format(n=n, title=title.strip(), article=article.strip())
    return [
        ChatMessage(role="system", content=FROG_SYSTEM_PROMPT),
        ChatMessage(role="user", content=instruction),
    ]


__all__ = [
    "BUILTIN_TEMPLATES",
    "DEFAULT_CONTEXT_HEADER",
    "DEFAULT_PASSAGE_TEMPLATE",
    "DEFAULT_SYSTEM_PROMPT",
    "FROG_CITATION_INSTRUCTION",
    "FROG_CONTEXT_HEADER",
    "FROG_PASSAGE_TEMPLATE",
    "FROG_REWRITE_INSTRUCTION",
    "FROG_SYSTEM_PROMPT",
    "MESSAGE_OVERHEAD_TOKENS",
    "PHRASINGS_INSTRUCTION",
    "PromptSettings",
    "PromptTemplate",
    "TemplateOverride",
    "TokenCounter",
    "build_messages",
    "estimate_tokens",
    "estimate_usage",
    "fit_passages",
    "phrasings_messages",
    "render_passage",
    "rewrite_messages",
    "system_message",
]
