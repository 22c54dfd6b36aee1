"""The RAG pipeline, driven directly: retrieval, the prompt, the token budget, streaming."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from lexrag.config import load_config
from lexrag.errors import InvalidRequestError, NotFoundError
from lexrag.pipeline import Pipeline
from lexrag.prompt import PromptSettings, build_messages, estimate_tokens, fit_passages
from lexrag.registry import Registry, check_config
from lexrag.types import ChatCompletionRequest, ChatMessage, GenerateRequest, Source

from .fakes import LocalStyleProvider, StaticRetriever

BASE = """
[llm]
provider = "local-style"
[retrieval]
retriever = "static"
top_k = 3
"""


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def make_pipeline(fake_pm, tmp_path: Path):
    made: list[Pipeline] = []

    def make(extra: str = "", base: str = BASE) -> Pipeline:
        path = tmp_path / "lexrag.toml"
        path.write_text(base + extra, encoding="utf-8")
        registry = Registry(fake_pm)
        pipeline = Pipeline(check_config(load_config(path, env={}), registry), registry)
        made.append(pipeline)
        return pipeline

    LocalStyleProvider.seen.clear()
    StaticRetriever.searches.clear()
    yield make
    for pipeline in made:
        run(pipeline.aclose())


def ask(text: str, **kw: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest(messages=[ChatMessage(role="user", content=text)], **kw)


def test_chat_retrieves_builds_a_cited_prompt_and_attaches_sources(make_pipeline):
    pipeline = make_pipeline()
    completion = run(pipeline.chat(ask("Thời giờ làm việc bình thường một ngày là bao nhiêu giờ?")))

    assert completion.text.endswith("[1].")
    assert completion.model == "frog-test"
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    sources = completion.sources
    assert sources and [s.index for s in sources] == list(range(1, len(sources) + 1))
    assert sources[0].article == 105 and sources[0].doc == "bo-luat-lao-dong"
    assert (
        sources[0].citation
        == "Bộ luật Lao động, Chương VII, Điều 105. Thời giờ làm việc bình thường, khoản 1"
    )

    sent = LocalStyleProvider.seen[-1]
    assert [m.role for m in sent.messages] == ["system", "user"]
    system = sent.messages[0].content or ""
    assert system.startswith(PromptSettings().system)
    assert (
        "[1] Bộ luật Lao động, Chương VII, Điều 105. Thời giờ làm việc bình thường, khoản 1\nĐiều 105."
        in system
    )
    assert system.index("[1] ") < system.index("[2] ")
    assert "trích dẫn" in system  # the instruction to cite by number, in Vietnamese
    assert sent.messages[1].content == "Thời giờ làm việc bình thường một ngày là bao nhiêu giờ?"
    assert list(sent.sources) == sources


def test_retrieval_runs_in_a_worker_thread_on_the_conversation_query(make_pipeline):
    pipeline = make_pipeline()
    request = ChatCompletionRequest(
        messages=[
            ChatMessage(role="user", content="Điều kiện kết hôn là gì?"),
            ChatMessage(role="assistant", content="Nam từ đủ 20 tuổi [1]."),
            ChatMessage(role="user", content="Còn thời gian thử việc?"),
        ]
    )
    run(pipeline.chat(request))
    query, thread = StaticRetriever.searches[-1]
    # "Còn …?" follows up on the turn before: both are searched (lexrag.vntext.combine_turns).
    assert query == "Điều kiện kết hôn là gì?\nCòn thời gian thử việc?"
    assert thread != threading.main_thread().name
    sent = LocalStyleProvider.seen[-1]
    assert [m.content for m in sent.messages[1:]] == [m.content for m in request.messages]


@pytest.mark.parametrize("how", ["request", "config"])
def test_rag_off_passes_messages_through_unchanged(make_pipeline, how):
    pipeline = make_pipeline("enabled = false\n" if how == "config" else "")
    messages = [
        ChatMessage(role="system", content="Trả lời ngắn gọn."),
        ChatMessage(role="user", content="Xin chào"),
    ]
    request = ChatCompletionRequest(messages=messages, rag=False if how == "request" else None)
    completion = run(pipeline.chat(request))
    assert completion.sources is None
    assert StaticRetriever.searches == []
    assert LocalStyleProvider.seen[-1].messages == messages
    assert LocalStyleProvider.seen[-1].sources == ()


def test_client_system_turn_is_folded_into_the_one_system_message(make_pipeline):
    pipeline = make_pipeline()
    request = ChatCompletionRequest(
        messages=[
            ChatMessage(role="system", content="Luôn trả lời bằng một câu."),
            ChatMessage(role="user", content="thử việc"),
        ]
    )
    run(pipeline.chat(request))
    sent = LocalStyleProvider.seen[-1].messages
    assert [m.role for m in sent] == ["system", "user"]
    assert (sent[0].content or "").endswith("Luôn trả lời bằng một câu.")


def test_prompt_wording_is_overridden_by_config(make_pipeline):
    extra = '[prompt]\nsystem = "CHỈ DẪN RIÊNG"\npassage = "<{index}> {citation} :: {text}"\ncontext_header = "NGỮ CẢNH"\n'
    pipeline = make_pipeline(extra)
    run(pipeline.chat(ask("thử việc")))
    system = LocalStyleProvider.seen[-1].messages[0].content or ""
    assert system.startswith("CHỈ DẪN RIÊNG\n\nNGỮ CẢNH\n\n<1> Bộ luật Lao động")
    assert PromptSettings().system not in system


def test_token_budget_drops_the_lowest_ranked_passages(make_pipeline):
    wide = run(make_pipeline().chat(ask("thời gian thử việc tiền lương thử việc")))
    assert len(wide.sources or []) == 3
    # A context window that holds the instructions, the question and about one passage.
    narrow = make_pipeline("[providers.local-style]\ncontext_window = 250\n")
    completion = run(narrow.chat(ask("thời gian thử việc tiền lương thử việc", max_tokens=64)))
    kept = completion.sources or []
    assert 1 <= len(kept) < 3
    assert [s.article for s in kept] == [s.article for s in (wide.sources or [])][: len(kept)]
    provider = narrow.router.provider("local-style")
    prompt_tokens = sum(
        provider.count_tokens(m.content or "") or 0 for m in LocalStyleProvider.seen[-1].messages
    )
    assert prompt_tokens + 64 <= 250


def test_fit_passages_counts_with_the_given_tokenizer_and_renumbers():
    settings = PromptSettings()
    messages = [ChatMessage(role="user", content="câu hỏi")]
    passages = [
        Source(index=i, doc="d", title="T", citation=f"T, Điều {i}", score=1.0 / i, text="chữ " * 40)
        for i in (3, 5, 9)
    ]
    every = fit_passages(settings, messages, passages, budget=10_000, count=lambda s: len(s.split()))
    assert [p.index for p in every] == [1, 2, 3]
    assert [p.citation for p in every] == ["T, Điều 3", "T, Điều 5", "T, Điều 9"]
    base = fit_passages(settings, messages, [], budget=10_000, count=lambda s: len(s.split()))
    assert base == []
    # Room for exactly one passage by the word count; the char estimate would fit none.
    overhead = len(settings.system.split()) + len(settings.context_header.split()) + 2 + 16
    one = fit_passages(settings, messages, passages, budget=overhead + 48, count=lambda s: len(s.split()))
    assert [p.citation for p in one] == ["T, Điều 3"]
    assert fit_passages(settings, messages, passages, budget=overhead + 48, count=estimate_tokens) == []


def test_build_messages_without_passages_keeps_the_instructions():
    settings = PromptSettings()
    out = build_messages(settings, [ChatMessage(role="user", content="x")], [])
    assert out[0].content == settings.system


def test_stream_puts_sources_on_the_last_chunk(make_pipeline):
    pipeline = make_pipeline()

    async def collect(request: ChatCompletionRequest) -> list[Any]:
        return [chunk async for chunk in pipeline.chat_stream(request)]

    chunks = run(collect(ask("thử việc", stream=True)))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].sources and chunks[-1].sources[0].article in (25, 26)
    assert all(c.sources is None for c in chunks[:-1])
    assert all(c.choices for c in chunks)  # no usage chunk unless asked for
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "Theo quy định, không quá 08 giờ trong 01 ngày [1]."

    with_usage = run(collect(ask("thử việc", stream=True, stream_options={"include_usage": True})))
    last = with_usage[-1]
    assert last.choices == [] and last.usage is not None and last.usage.completion_tokens > 0
    assert last.sources and all(c.sources is None for c in with_usage[:-1])
    assert with_usage[-2].choices[0].finish_reason == "stop"


def test_request_limits_are_checked(make_pipeline):
    pipeline = make_pipeline("[server]\nmax_tokens = 100\n")
    with pytest.raises(InvalidRequestError, match="n=2") as err:
        run(pipeline.chat(ask("x", n=2)))
    assert err.value.param == "n"
    with pytest.raises(InvalidRequestError, match="limit of 100") as err:
        run(pipeline.chat(ask("x", max_tokens=101)))
    assert err.value.param == "max_tokens"


def test_model_names_a_provider_or_one_of_its_models(make_pipeline):
    pipeline = make_pipeline("[providers.extractive]\n")
    assert run(pipeline.chat(ask("x", model="frog-test", rag=False))).model == "frog-test"
    extractive = run(pipeline.chat(ask("thử việc", model="extractive")))
    assert "[1] Bộ luật Lao động" in extractive.text
    with pytest.raises(
        NotFoundError, match=r"'gpt-x'.*valid names: local-style, frog-test, extractive"
    ) as err:
        run(pipeline.chat(ask("x", model="gpt-x")))
    assert err.value.status == 404 and err.value.param == "model"


def test_generate_sends_the_prompt_as_is(make_pipeline):
    pipeline = make_pipeline()
    response = run(pipeline.generate(GenerateRequest(prompt="Viết một câu.", max_tokens=20, do_sample=False)))
    assert response.generated_text == "Theo quy định, không quá 08 giờ trong 01 ngày [1]."
    sent = LocalStyleProvider.seen[-1]
    assert [(m.role, m.content) for m in sent.messages] == [("user", "Viết một câu.")]
    assert sent.params.max_tokens == 20 and sent.params.temperature == 0.0
    assert StaticRetriever.searches == []


def test_a_question_without_user_text_is_a_clear_error(make_pipeline):
    pipeline = make_pipeline()
    request = ChatCompletionRequest(messages=[ChatMessage(role="system", content="x")])
    with pytest.raises(InvalidRequestError, match="no user message with text") as err:
        run(pipeline.chat(request))
    assert err.value.param == "messages"
