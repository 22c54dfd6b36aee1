"""End to end over the sample corpus: the real ``lexrag ingest``, the real hybrid retriever, the
real server, the openai provider pointed at the fake upstream, the openai SDK as client."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from .conftest import CORPUS, run_cli
from .fakes import FakeUpstream, Reply

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    index = tmp_path_factory.mktemp("index")
    result = run_cli("ingest", str(CORPUS), env={"LEXRAG_INDEX_DIR": str(index)}, cwd=index)
    assert result.returncode == 0, result.stderr
    return index


def test_cited_answer_from_the_sample_corpus(running_server, fake_upstream: FakeUpstream, corpus_index: Path):
    fake_upstream.default = Reply("Không quá 08 giờ trong 01 ngày [1].")
    base = running_server(
        f'[llm]\nprovider = "openai"\n[index]\ndir = "{corpus_index}"\n'
        f'[providers.openai]\nbase_url = "{fake_upstream.base_url}"\nmodel = "fake-model"\n'
    )
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)
    question = "Một ngày người lao động làm việc tối đa bao nhiêu giờ?"
    completion = client.chat.completions.create(
        model="openai", messages=[{"role": "user", "content": question}]
    )

    assert completion.choices[0].message.content == "Không quá 08 giờ trong 01 ngày [1]."
    sources = completion.to_dict()["sources"]
    assert any(s["doc"] == "bo-luat-lao-dong" and s["article"] == 105 for s in sources[:3])
    system = fake_upstream.requests[-1].json["messages"][0]["content"]
    hit = next(s for s in sources if s["article"] == 105)
    assert f"[{hit['index']}] {hit['citation']}" in system
    assert "08 giờ" in system

    stream = client.chat.completions.create(
        model="openai", messages=[{"role": "user", "content": question}], stream=True
    )
    chunks = list(stream)
    assert chunks[-1].to_dict()["sources"] == sources
