"""Prompt templates per provider: the Frog model card's layout for ``local``, lexrag's own
for ``openai`` and ``extractive``, ``[prompt]`` overrides; the card's rewriting prompt."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from lexrag.config import load_config
from lexrag.errors import ConfigError
from lexrag.pipeline import Pipeline
from lexrag.prompt import (
    DEFAULT_SYSTEM_PROMPT,
    FROG_REWRITE_INSTRUCTION,
    FROG_SYSTEM_PROMPT,
    PromptSettings,
    build_messages,
    rewrite_messages,
)
from lexrag.registry import Registry, check_config
from lexrag.types import ChatCompletionRequest, ChatMessage, Source

#: The Frog card's recommended system prompt, as its README writes it (typed here from the
#: card, not imported, so that a change to the constant shows up).
CARD_SYSTEM_PROMPT = (
    "Bạn là một trợ lí Tiếng Việt nhiệt tình và trung thực. Hãy luôn trả lời một cách hữu ích nhất có "
    "thể, đồng thời giữ an toàn.\nNếu một câu hỏi không có ý nghĩa hoặc không hợp lý về mặt thông tin, "
    "hãy giải thích tại sao thay vì trả lời một điều gì đó không chính xác, vui lòng không chia sẻ "
    "thông tin sai lệch."
)
QUESTION = "Thời giờ làm việc bình thường một ngày là bao nhiêu giờ?"
CITATION = "Bộ luật Lao động, Chương VII, Điều 105. Thời giờ làm việc bình thường, khoản 1"


def config_for(provider: str, upstream: Any, extra: str = "") -> str:
    return (
        f'[llm]\nprovider = "{provider}"\n[retrieval]\nretriever = "static"\ntop_k = 2\n'
        f'[providers.local]\nurl = "{upstream.url}"\n'
        f'[providers.openai]\nbase_url = "{upstream.base_url}"\napi_key = "sk-test"\nmodel = "fake-model"\n'
        + extra
    )


@pytest.fixture
def sent_system(fake_pm, fake_upstream, tmp_path: Path):
    """The system message the provider sent upstream for one RAG question."""

    def ask(provider: str, extra: str = "") -> str:
        path = tmp_path / "lexrag.toml"
        path.write_text(config_for(provider, fake_upstream, extra), encoding="utf-8")
        registry = Registry(fake_pm)
        pipeline = Pipeline(check_config(load_config(path, env={}), registry), registry)
        request = ChatCompletionRequest(messages=[ChatMessage(role="user", content=QUESTION)])

        async def go() -> None:
            try:
                await pipeline.chat(request)
            finally:
                await pipeline.aclose()

        asyncio.run(go())
        sent = fake_upstream.requests[-1]
        assert sent.path == "/v1/chat/completions"
        messages = sent.json["messages"]
        assert [m["role"] for m in messages] == ["system", "user"]
        assert messages[1]["content"] == QUESTION
        return str(messages[0]["content"])

    return ask


def test_the_local_provider_sends_the_frog_card_layout(sent_system):
    system = sent_system("local")
    # The card's prompt, then lexrag's [n] citation instruction, then "Context:" and the
    # passages as `Đoạn N: "…"`, one per line (the card's RAG example), numbered as cited.
    assert system.startswith(CARD_SYSTEM_PROMPT + "\n")
    instructions, context = system.split("\nContext:\n")
    assert "trích dẫn số của đoạn đó trong ngoặc vuông, ví dụ [1]" in instructions
    assert context.startswith(f'Đoạn 1: "{CITATION}\nĐiều 105. Thời giờ làm việc bình thường\n1.')
    assert '"\nĐoạn 2: "' in context and context.endswith('"')
    assert "[1] " not in system and DEFAULT_SYSTEM_PROMPT not in system


def test_the_openai_provider_sends_the_default_layout(sent_system):
    system = sent_system("openai")
    assert system.startswith(DEFAULT_SYSTEM_PROMPT + "\n\nCác đoạn văn bản pháp luật liên quan:\n\n")
    assert f"[1] {CITATION}\nĐiều 105." in system
    assert CARD_SYSTEM_PROMPT not in system and "Đoạn 1" not in system


def test_provider_templates_override_each_providers_choice(sent_system):
    extra = '[prompt.provider_templates]\nlocal = "default"\nopenai = "frog"\n'
    assert sent_system("local", extra).startswith(DEFAULT_SYSTEM_PROMPT + "\n\n")
    assert sent_system("openai", extra).startswith(CARD_SYSTEM_PROMPT + "\n")


def test_a_template_can_be_reworded_or_added(sent_system):
    reworded = '[prompt.templates.frog]\nsystem = "Trả lời ngắn gọn, trích dẫn [n]."\n'
    system = sent_system("local", reworded)
    assert system.startswith('Trả lời ngắn gọn, trích dẫn [n].\nContext:\nĐoạn 1: "')
    added = (
        '[prompt.templates.terse]\nsystem = "Ngắn gọn."\ncontext_header = "Tài liệu:"\nseparator = "\\n"\n'
        '[prompt.provider_templates]\nopenai = "terse"\n'
    )
    system = sent_system("openai", added)
    assert system.startswith(f"Ngắn gọn.\nTài liệu:\n[1] {CITATION}\n")
    # [prompt] itself is the default template's wording, as before.
    assert sent_system("openai", '[prompt]\nsystem = "Hệ thống."\n').startswith("Hệ thống.\n\n")


def test_an_unknown_template_is_a_config_error(registry, tmp_path: Path):
    path = tmp_path / "lexrag.toml"
    path.write_text('[prompt.provider_templates]\nlocal = "frogg"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"frogg.*names no template.*default, frog"):
        check_config(load_config(path, env={}), registry)


def test_each_provider_names_its_template(registry):
    classes = registry.providers.classes
    assert classes["local"].prompt_template == "frog"
    assert classes["openai"].prompt_template == "default"
    assert classes["extractive"].prompt_template == "default"
    settings = PromptSettings()
    assert settings.template_for("local", "frog").system.startswith(CARD_SYSTEM_PROMPT)
    assert settings.template_for("openai").system == DEFAULT_SYSTEM_PROMPT


def test_the_frog_template_keeps_the_clients_system_text_after_the_context():
    template = PromptSettings().template("frog")
    source = Source(index=1, doc="d", title="t", citation="Luật X, Điều 1", score=1.0, text="Nội dung.")
    messages = [ChatMessage(role="system", content="Xưng là em."), ChatMessage(role="user", content="Hỏi?")]
    out = build_messages(template, messages, [source])
    assert out[0].content == (
        f'{template.system}\nContext:\nĐoạn 1: "Luật X, Điều 1\nNội dung."\nXưng là em.'
    )
    assert [m.role for m in out] == ["system", "user"]


def test_the_cards_rewriting_prompt():
    history = [
        ChatMessage(role="user", content="Thời gian thử việc tối đa là bao lâu?"),
        ChatMessage(role="assistant", content="Không quá 180 ngày đối với người quản lý doanh nghiệp [1]."),
        ChatMessage(role="user", content="Còn lương thì sao?"),
    ]
    messages = rewrite_messages(history[:-1], "Còn lương thì sao?")
    assert [m.role for m in messages] == ["system", "user"]
    assert messages[0].content == (
        CARD_SYSTEM_PROMPT
        + "\nContext:\nUSER: Thời gian thử việc tối đa là bao lâu?"
        + "\nASSISTANT: Không quá 180 ngày đối với người quản lý doanh nghiệp [1]."
    )
    # The card's instruction, word for word (its "đầu đủ" included).
    assert messages[1].content == (
        "Dựa vào đoạn hội thoại được cung cấp, viết lại câu nói của người dùng sao cho đầu đủ ý nhất "
        "có thể mà không bị sai lệch thông tin.\nCâu nói: Còn lương thì sao?"
    )
    assert FROG_REWRITE_INSTRUCTION.format(question="x").endswith("Câu nói: x")
    assert FROG_SYSTEM_PROMPT == CARD_SYSTEM_PROMPT
