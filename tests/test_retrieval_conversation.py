"""Retrieval in a conversation (the query built from the turns, or rewritten by a provider)
and the answer-level evaluation (``lexrag eval --answers``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pluggy
import pytest
from pydantic import BaseModel, ConfigDict

from lexrag import ChatCompletion, ChatCompletionChunk, ChunkFactory, Provider, ProviderRequest, hookimpl
from lexrag.calllog import CallRecord, recording
from lexrag.config import load_config
from lexrag.evaluation import contains_all, evaluate, evaluate_answers, load_questions
from lexrag.pipeline import Pipeline
from lexrag.registry import Registry, build_retriever, check_config
from lexrag.types import ChatCompletionRequest, ChatMessage
from lexrag.vntext import combine_turns, follows_up

from .conftest import DEV_QUESTIONS, run_cli
from .fixtures_resilience import metric

MARRIAGE = ["Nam bao nhiêu tuổi thì được kết hôn?", "Còn nữ thì sao?"]


def test_follow_ups_are_told_from_new_questions() -> None:
    for turn in (
        "Còn nữ thì sao?",
        "con nu thi sao",
        "Nếu làm người ta chết thì sao?",
        "Những ai thì được hưởng?",
    ):
        assert follows_up(turn), turn
    for turn in (
        "Trộm cắp tài sản bị phạt tù bao nhiêu năm?",
        "Con tôi 14 tuổi đi làm thêm thì một ngày được làm tối đa mấy tiếng?",
        "Mượn xe máy của bạn rồi đem đi cầm đồ thì phạm tội gì?",
    ):
        assert not follows_up(turn), turn
    assert combine_turns(MARRIAGE) == "\n".join(MARRIAGE)
    switch = ["Thử việc tối đa mấy tháng?", "Trộm cắp tài sản bị phạt tù bao nhiêu năm?"]
    assert combine_turns(switch) == "\n".join([switch[1]] * 3 + [switch[0]])
    assert combine_turns(["Một câu hỏi?"]) == "Một câu hỏi?"


def _pipeline(
    index: Path, registry: Registry, tmp_path: Path, extra: dict[str, Any] | None = None
) -> Pipeline:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    overrides = {"index.dir": str(index), "llm.provider": "extractive", **(extra or {})}
    return Pipeline(check_config(load_config(empty, env={}, overrides=overrides), registry), registry)


def _chat(turns: list[str]) -> ChatCompletionRequest:
    messages = []
    for i, turn in enumerate(turns):
        if i:
            messages.append(ChatMessage(role="assistant", content="…"))
        messages.append(ChatMessage(role="user", content=turn))
    return ChatCompletionRequest(messages=messages)


def test_a_follow_up_retrieves_the_article_of_the_conversation(
    sample_index: Path, session_registry: Registry, tmp_path: Path
) -> None:
    """The issue's example: after "Nam bao nhiêu tuổi thì được kết hôn?", "Còn nữ thì sao?"
    must find the marriage-age article (Điều 8), not maternity leave."""

    async def sources(extra: dict[str, Any]) -> list[tuple[str, int | None]]:
        pipeline = _pipeline(sample_index, session_registry, tmp_path, extra)
        try:
            completion = await pipeline.chat(_chat(MARRIAGE))
        finally:
            await pipeline.aclose()
        return [(s.doc, s.article) for s in completion.sources or []]

    combined = asyncio.run(sources({}))
    assert combined[0] == ("luat-hon-nhan-gia-dinh", 8)
    last_only = asyncio.run(sources({"retrieval.conversation": "last"}))
    assert last_only[0] != ("luat-hon-nhan-gia-dinh", 8)


class RewriterSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = "Nữ bao nhiêu tuổi thì được kết hôn?"
    delay_s: float = 0.0


class Rewriter(Provider):
    """Answers every request with one fixed line, after ``delay_s``; keeps what it was sent."""

    Settings = RewriterSettings
    seen: ClassVar[list[ProviderRequest]] = []

    def __init__(self, name: str, settings: BaseModel) -> None:
        super().__init__(name, settings)
        assert isinstance(settings, RewriterSettings)
        self.options = settings

    async def complete(self, request: ProviderRequest) -> ChatCompletion:
        Rewriter.seen.append(request)
        await asyncio.sleep(self.options.delay_s)
        return ChatCompletion.of_text("rewriter", f'"{self.options.text}"\n', "stop")

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ChatCompletionChunk]:
        chunks = ChunkFactory("rewriter")
        yield chunks.role()
        yield chunks.text(self.options.text)
        yield chunks.finish("stop")


class RewriterPlugin:
    @hookimpl
    def register_llm_providers(self, register: Callable[[str, type[Any]], None]) -> None:
        register("rewriter", Rewriter)


@pytest.fixture
def rewriting_registry(pm: pluggy.PluginManager) -> Registry:
    pm.register(RewriterPlugin(), name="lexrag-test-rewriter")
    return Registry(pm)


def test_a_provider_rewrites_follow_ups_within_its_time(
    sample_index: Path, rewriting_registry: Registry, tmp_path: Path
) -> None:
    Rewriter.seen.clear()
    messages = _chat(MARRIAGE).messages
    pipeline = _pipeline(
        sample_index, rewriting_registry, tmp_path, {"retrieval.rewrite_provider": "rewriter"}
    )
    with recording(CallRecord()) as record:
        query = asyncio.run(pipeline.retrieval_query(messages))
    assert query == "Nữ bao nhiêu tuổi thì được kết hôn?"
    assert record.rewrite is not None and record.rewrite["provider"] == "rewriter"
    assert record.rewrite["outcome"] == "ok" and "rewrite" in record.as_dict()
    sent = Rewriter.seen[-1]
    # The Frog card's rewriting prompt: the conversation, then the instruction with the question.
    assert "USER: Nam bao nhiêu tuổi thì được kết hôn?" in (sent.messages[0].content or "")
    assert sent.messages[-1].content is not None and sent.messages[-1].content.endswith("Còn nữ thì sao?")
    assert sent.params is not None and sent.params.temperature == 0.0
    # A new question on its own is not sent to the model.
    switch = _chat(["Nam bao nhiêu tuổi thì được kết hôn?", "Trộm cắp tài sản bị phạt tù bao nhiêu năm?"])
    seen = len(Rewriter.seen)
    with recording(CallRecord()) as record:
        asyncio.run(pipeline.retrieval_query(switch.messages))
    assert len(Rewriter.seen) == seen and record.rewrite is None
    # Too slow: the turns are combined instead, and the log says why.
    slow = _pipeline(
        sample_index,
        rewriting_registry,
        tmp_path,
        {
            "retrieval.rewrite_provider": "rewriter",
            "retrieval.rewrite_timeout_s": 0.05,
            "providers.rewriter.delay_s": 2.0,
        },
    )
    with recording(CallRecord()) as record:
        query = asyncio.run(slow.retrieval_query(messages))
    assert query == combine_turns(MARRIAGE)
    assert record.rewrite is not None and record.rewrite["outcome"] == "timeout"


def test_the_rewrite_call_is_counted_in_the_metrics(
    sample_index: Path, rewriting_registry: Registry, running_server: Callable[[str], str]
) -> None:
    """A follow-up sent through the server: its rewrite call counts on ``/metrics`` by
    provider and outcome, with its latency; a question on its own adds nothing."""
    base = running_server(
        f'[index]\ndir = "{sample_index}"\n[llm]\nprovider = "extractive"\n'
        '[retrieval]\nrewrite_provider = "rewriter"\n'
    )

    def chat(turns: list[str]) -> None:
        body = _chat(turns).model_dump(exclude_none=True)
        assert httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60).status_code == 200

    chat(MARRIAGE)
    chat(["Nam bao nhiêu tuổi thì được kết hôn?", "Trộm cắp tài sản bị phạt tù bao nhiêu năm?"])
    ok = {"provider": "rewriter", "outcome": "ok"}
    assert metric(base, "lexrag_query_rewrites_total", ok) == 1
    assert metric(base, "lexrag_query_rewrites_total") == 1
    assert metric(base, "lexrag_query_rewrite_duration_seconds_count", {"provider": "rewriter"}) == 1
    assert metric(base, "lexrag_requests_total", {"provider": "extractive", "status": "200"}) == 2


def test_conversation_questions_and_answer_contains_load(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(
        json.dumps({"id": "c1", "turns": MARRIAGE, "doc": "luat-hon-nhan-gia-dinh", "article": 8})
        + "\n"
        + json.dumps({"question": "Q?", "doc": "d", "article": 1, "answer_contains": "x"})
        + "\n"
    )
    conversation, single = load_questions(path)
    assert conversation.question == "Còn nữ thì sao?" and conversation.turns == tuple(MARRIAGE)
    assert conversation.query == combine_turns(MARRIAGE) and single.query == "Q?"
    assert single.answer_contains == ("x",) and conversation.answer_contains == ()
    assert contains_all("Nam từ đủ  20 tuổi,\nnữ từ đủ 18 TUỔI", ["nữ từ đủ 18 tuổi", "20 tuổi"])
    assert not contains_all("Nam từ đủ 20 tuổi", ["18 tuổi"])


def test_answer_evaluation_through_the_pipeline(
    sample_index: Path, session_registry: Registry, tmp_path: Path
) -> None:
    questions = load_questions(DEV_QUESTIONS)[:12]
    pipeline = _pipeline(sample_index, session_registry, tmp_path)

    async def run() -> dict[str, Any]:
        try:
            return await evaluate_answers(pipeline, questions)
        finally:
            await pipeline.aclose()

    result = asyncio.run(run())
    assert result["n"] == 12 and result["errors"] == 0
    assert result["n_answer_contains"] == sum(1 for q in questions if q.answer_contains)
    assert 0.5 <= result["answer_contains"] <= 1.0
    assert result["cites_gold"] <= result["retrieved_gold"] and result["retrieved_gold"] >= 0.9
    assert 0 < result["latency_p50_s"] <= result["latency_p95_s"]
    retriever = build_retriever(
        check_config(
            load_config(tmp_path / "empty.toml", env={}, overrides={"index.dir": str(sample_index)}),
            session_registry,
        ),
        session_registry,
    )
    assert evaluate(retriever, questions)["recall@5"] >= 0.9
    retriever.close()


def test_eval_answers_on_the_command_line(sample_index: Path, tmp_path: Path) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(DEV_QUESTIONS.read_text().splitlines()[:6]) + "\n")
    result = run_cli("eval", str(questions), "--index", str(sample_index), "--answers", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert {"n", "recall@1", "recall@5", "recall@10", "mrr@10", "answers"} <= set(out)
    answers = out["answers"]["extractive"]
    assert {
        "n",
        "answer_contains",
        "n_answer_contains",
        "cites_gold",
        "retrieved_gold",
        "latency_p50_s",
        "latency_p95_s",
        "errors",
    } == set(answers)
    from lexrag.cli.index_cmds import _answers_line

    assert _answers_line("extractive", answers).startswith("answers (extractive): contain answer_contains ")
