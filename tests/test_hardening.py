"""Issue 13's faults, each with the test that found it: providers that cannot be built,
fallback that reaches the last resort, an honest OpenAI health probe, a client that leaves a
non-streamed request, secrets in URLs, and invisible characters in queries."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from lexrag import ChatCompletion, ChatCompletionChunk, Provider, ProviderError, ProviderRequest, hookimpl

from .conftest import ROOT, run_cli
from .fakes import Fail, FakeUpstream, Hang
from .fixtures_local import serving, start_serve
from .fixtures_resilience import BACKUP_ANSWER, ask, call_line, chain_config

PASSWORD = "PASSWORD-hunter2"

# --- providers that cannot be built -----------------------------------------------------


class Crashing(Provider):
    """A provider whose model crashed: every call fails for good, not because of the request."""

    async def complete(self, request: ProviderRequest) -> ChatCompletion:
        raise ProviderError("the local model crashed: onnxruntime aborted", retryable=False)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ChatCompletionChunk]:
        raise ProviderError("the local model crashed: onnxruntime aborted", retryable=False)
        yield  # pragma: no cover - makes this an async generator


class CrashingPlugin:
    @hookimpl
    def register_llm_providers(self, register: Callable[[str, type[Any]], None]) -> None:
        register("crashing", Crashing)


UNBUILDABLE = (
    '[llm]\nprovider = "local"\nfallback = ["extractive"]\n'
    '[retrieval]\nretriever = "static"\nembedder = "hash"\n'
)


def _models(base: str) -> dict[str, dict[str, Any]]:
    response = httpx.get(f"{base}/v1/models")
    assert response.status_code == 200, response.text
    return {card["id"]: card for card in response.json()["data"]}


@pytest.mark.parametrize("stream", [False, True])
def test_an_unbuildable_provider_is_reported_and_the_chain_skips_it(start_server, stream, caplog):
    served = start_server(UNBUILDABLE)
    cards = _models(served.base)
    assert cards["local"]["state"] == "unavailable" and "model_dir" in cards["local"]["reason"]
    assert cards["extractive"]["state"] == "closed"
    assert any("provider local is unavailable" in r.getMessage() for r in caplog.records)

    got = ask(served.base, stream=stream, model="local")
    assert got.kind == "answer" and got.provider == "extractive", got

    health = httpx.get(f"{served.base}/health")
    assert health.status_code == 200  # the fallback answers: degraded, not down
    body = health.json()
    assert body["status"] == "degraded"
    assert body["providers"]["local"]["status"] == "unavailable"
    assert "model_dir" in body["providers"]["local"]["error"]


def test_the_shipped_example_config_serves_models_and_falls_back(start_server, tmp_path):
    """lexrag.toml.example copied unchanged (no model exported, no OpenAI key): /v1/models
    answers, and a request for gpt-4o-mini reaches the extractive last resort."""
    example = tmp_path / "lexrag.toml"
    shutil.copy(ROOT / "lexrag.toml.example", example)
    served = start_server(example.read_text(encoding="utf-8"))
    cards = _models(served.base)
    assert cards["local"]["state"] == "unavailable"
    assert cards["gpt-4o-mini"]["owned_by"] == "openai"
    for stream in (False, True):
        got = ask(served.base, stream=stream, model="gpt-4o-mini", extra_body={"rag": False})
        assert got.kind == "answer" and got.provider == "extractive", got


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", [401, 403, 404])
def test_a_provider_fault_falls_back(start_server, two_upstreams, status, stream, call_log):
    """A refused key, a forbidden or unknown model: the provider's fault, not the request's."""
    primary, backup = two_upstreams
    primary.default = Fail(status, message="nope")
    served = start_server(chain_config(primary, backup))
    got = ask(served.base, stream=stream, request_id=f"fault-{status}-{stream}")
    assert got.kind == "answer" and got.provider == "openai-backup" and got.text == BACKUP_ANSWER, got
    line = call_line(call_log, f"fault-{status}-{stream}")
    assert line["fallback"] is True and len([r for r in primary.requests if r.method == "POST"]) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_a_crashed_model_falls_back(start_server, resilient_pm, two_upstreams, stream):
    _, backup = two_upstreams
    resilient_pm.register(CrashingPlugin(), name="crashing-plugin")
    config = chain_config(backup).replace('provider = "openai"', 'provider = "crashing"')
    config = config.replace("fallback = []", 'fallback = ["openai"]')
    served = start_server(config)
    got = ask(served.base, stream=stream, model="crashing")
    assert got.kind == "answer" and got.provider == "openai", got


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_fault_fails_at_once(start_server, two_upstreams, stream):
    primary, backup = two_upstreams
    primary.default = Fail(400, message="max_tokens is too large", type="invalid_request_error")
    served = start_server(chain_config(primary, backup))
    got = ask(served.base, stream=stream)
    assert got.kind == "error" and got.status == 400, got
    assert [r for r in backup.requests if r.method == "POST"] == []


# --- the OpenAI provider's health ----------------------------------------------------------


def _openai_health(base: str) -> dict[str, Any]:
    return dict(httpx.get(f"{base}/health").json()["providers"]["openai"])


def test_openai_health_probes_the_upstream_and_caches_it(start_server, two_upstreams):
    primary, _ = two_upstreams
    served = start_server(chain_config(primary))
    assert _openai_health(served.base)["status"] == "ok"
    for _ in range(5):
        _openai_health(served.base)
    probes = [r for r in primary.requests if r.method == "GET" and r.path == "/v1/models"]
    assert len(probes) == 1


def test_openai_health_says_unauthorized(start_server, two_upstreams):
    primary, _ = two_upstreams
    primary.models_status = 401
    served = start_server(chain_config(primary))
    state = _openai_health(served.base)
    assert state["status"] == "unauthorized" and "credentials" in state["error"]


def test_openai_health_says_down_and_so_does_the_server(start_server):
    with FakeUpstream() as gone:
        config = chain_config(gone)
    served = start_server(config)  # the upstream's port is closed now
    response = httpx.get(f"{served.base}/health")
    assert response.status_code == 503
    assert response.json()["providers"]["openai"]["status"] == "down"


def test_openai_without_a_key_is_unauthorized(start_server, tmp_path):
    served = start_server(
        '[llm]\nprovider = "openai"\nfallback = ["extractive"]\n[retrieval]\nenabled = false\n'
    )
    state = _openai_health(served.base)
    assert state["status"] == "unauthorized" and "OPENAI_API_KEY" in state["error"]


# --- a client that leaves ------------------------------------------------------------------


def test_a_client_that_disconnects_cancels_the_upstream_call(start_server, two_upstreams, call_log):
    primary, _ = two_upstreams
    primary.script(Hang(30))
    served = start_server(chain_config(primary, timeout=30, deadline=60))
    body = {"model": "openai", "messages": [{"role": "user", "content": "Thời giờ làm việc?"}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{served.base}/v1/chat/completions",
            json=body,
            headers={"x-request-id": "leaver"},
            timeout=httpx.Timeout(10, read=0.5),
        )
    deadline = time.monotonic() + 5
    while primary.abandoned == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert primary.abandoned == 1  # the upstream saw its connection closed, not a finished call
    assert call_line(call_log, "leaver")["status"] == 499


# --- secrets in URLs -----------------------------------------------------------------------


def test_a_password_in_the_base_url_never_leaves_the_process(start_server, caplog):
    with FakeUpstream() as gone:
        url = gone.base_url.replace("http://", f"http://proxyuser:{PASSWORD}@")
    served = start_server(
        '[llm]\nprovider = "openai"\nmax_retries = 0\ndeadline_s = 3\n'
        "[retrieval]\nenabled = false\n[providers.openai]\ntimeout = 0.5\nconnect_timeout = 0.5\n",
        env={"OPENAI_BASE_URL": url},
    )
    for stream in (False, True):
        got = ask(served.base, stream=stream)
        assert got.kind == "error", got
        assert PASSWORD not in json.dumps(got.error)
        assert "proxyuser:********@127.0.0.1" in got.error["message"]
    health = httpx.get(f"{served.base}/health").text
    assert PASSWORD not in health and "proxyuser:********@" in health
    models = httpx.get(f"{served.base}/v1/models").text
    metrics = httpx.get(f"{served.base}/metrics").text
    assert PASSWORD not in models + metrics
    assert caplog.records and PASSWORD not in caplog.text


def test_config_show_masks_urls_and_only_secrets(tmp_path):
    config = tmp_path / "lexrag.toml"
    config.write_text(
        "[server]\nmax_tokens = 1234\n"
        '[providers.local]\nmax_tokens = 77\ntokenizer_dir = "tok"\nurl = "http://svc:s3cret@llm:8000?token=abc"\n'
        '[providers.openai]\ntoken_param = "max_completion_tokens"\napi_key = "sk-file-secret"\n',
        encoding="utf-8",
    )
    env = {"OPENAI_BASE_URL": f"http://proxyuser:{PASSWORD}@proxy:3128/v1"}
    shown = run_cli("--config", str(config), "config", "show", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    settings = {k: v["value"] for k, v in json.loads(shown.stdout)["settings"].items()}
    assert settings["server.max_tokens"] == 1234
    assert settings["providers.local.max_tokens"] == 77
    assert settings["providers.local.tokenizer_dir"] == "tok"
    assert settings["providers.openai.token_param"] == "max_completion_tokens"
    assert settings["providers.openai.api_key"] == "********"
    assert settings["providers.openai.base_url"] == "http://proxyuser:********@proxy:3128/v1"
    assert settings["providers.local.url"] == "http://svc:********@llm:8000?token=********"
    table = run_cli("--config", str(config), "config", "show", env=env)
    for out in (shown.stdout, table.stdout, shown.stderr, table.stderr):
        assert PASSWORD not in out and "s3cret" not in out and "sk-file-secret" not in out


def test_mask_url_and_redact():
    from lexrag import mask_url, redact

    assert mask_url("http://u:pw@h:1/v1") == "http://u:********@h:1/v1"
    assert mask_url("https://tok@h/v1") == "https://********@h/v1"
    assert (
        mask_url("https://h/v1?api_key=a&x=1&Access-Token=b")
        == "https://h/v1?api_key=********&x=1&Access-Token=********"
    )
    assert mask_url("https://h/v1?page=2") == "https://h/v1?page=2"
    assert mask_url("not a url") == "not a url"
    assert redact("failed (http://u:pw@h/v1); see https://a/b?token=z.") == (
        "failed (http://u:********@h/v1); see https://a/b?token=********."
    )


# --- invisible characters ------------------------------------------------------------------


def test_zero_width_characters_do_not_change_retrieval(sample_index, session_registry):
    from lexrag.pipeline import Pipeline

    from .fixtures_retrieval import index_config

    pipeline = Pipeline(index_config(sample_index, session_registry), session_registry)
    clean = pipeline.retrieve("Thời gian thử việc tối đa là bao lâu?", 3)
    dirty = pipeline.retrieve("Th\u200bời gi\u200ban th\u200dử vi\ufeffệc tối đa là bao lâu?", 3)
    assert [(s.doc, s.article) for s in dirty] == [(s.doc, s.article) for s in clean]


# --- lexrag serve with providers that cannot be built -------------------------------------


def test_serve_refuses_to_start_only_when_no_provider_can_be_built(tmp_path):
    served = start_serve('[llm]\nprovider = "local"\n[retrieval]\nenabled = false\n', tmp_path)
    out = served.proc.communicate(timeout=120)[0]
    assert served.proc.returncode == 2, out
    lines = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "no provider of the chain (local) can be built: local:" in lines[0], out
    assert "model_dir" in lines[0] and "Traceback" not in out


def test_serve_starts_with_a_fallback_and_names_the_broken_provider(tmp_path):
    config = UNBUILDABLE.replace('retriever = "static"\nembedder = "hash"\n', "enabled = false\n")
    with serving(config, tmp_path, timeout=60) as served:
        assert served.health is not None
        assert served.health["providers"]["local"]["status"] == "unavailable"
    assert "provider local is unavailable: [providers.local] needs model_dir" in served.output


def test_serve_logs_no_password(tmp_path):
    with FakeUpstream() as gone:
        url = gone.base_url.replace("http://", f"http://proxyuser:{PASSWORD}@")
    config = (
        '[llm]\nprovider = "openai"\nfallback = ["extractive"]\nmax_retries = 1\nretry_backoff_s = 0.05\n'
        "[retrieval]\nenabled = false\n[providers.openai]\ntimeout = 0.5\nconnect_timeout = 0.5\n"
        '[logging]\nlevel = "DEBUG"\n'
    )
    with serving(config, tmp_path, timeout=60, env={"OPENAI_BASE_URL": url}) as served:
        for stream in (False, True):
            assert ask(served.base, stream=stream).provider == "extractive"
    out = served.output
    assert "provider openai failed" in out and "proxyuser:********@" in out, out
    assert PASSWORD not in out


# --- document ids and the CLI's search ----------------------------------------------------


def test_an_nfd_file_name_gives_an_nfc_document_id(tmp_path):
    import unicodedata

    from lexrag.ingest import ingest
    from lexrag.store import Store

    name = unicodedata.normalize("NFD", "luật-đất-đai")
    path = tmp_path / "docs" / f"{name}.txt"
    path.parent.mkdir()
    path.write_text(
        "LUẬT ĐẤT ĐAI\n\nĐiều 1. Phạm vi điều chỉnh\nLuật này quy định về đất đai.\n", encoding="utf-8"
    )
    store = Store.open(tmp_path / "index", create=True)
    try:
        report = ingest(store, None, [path.parent])
        assert report.added == [unicodedata.normalize("NFC", name)]
        assert [d.id for d in store.documents()] == ["luật-đất-đai"]
    finally:
        store.close()


def test_cli_search_ignores_zero_width_characters(sample_index):
    def top(query: str) -> list[tuple[str, int]]:
        result = run_cli("search", query, "--json", "--top-k", "3", "--index", str(sample_index))
        assert result.returncode == 0, result.stderr
        return [(h["doc"], h["article"]) for h in json.loads(result.stdout)]

    assert top("Th\u200bời gi\u200ban th\u200dử vi\ufeffệc tối đa") == top("Thời gian thử việc tối đa")


def test_a_reload_builds_the_new_providers_and_reports_the_broken_ones(start_server, resilient_pm, tmp_path):
    """SIGHUP's reload builds the new config's providers at once: a broken one is listed as
    unavailable before any request asks for it, and the chain answers without it."""
    import asyncio

    from lexrag.config import load_config
    from lexrag.registry import Registry, check_config

    served = start_server('[llm]\nprovider = "extractive"\n[retrieval]\nenabled = false\n')
    assert _models(served.base)["extractive"]["state"] == "closed"
    path = tmp_path / "reloaded.toml"
    path.write_text('[llm]\nprovider = "local"\nfallback = ["extractive"]\n[retrieval]\nenabled = false\n')
    config = check_config(load_config(path, env={}), Registry(resilient_pm))
    asyncio.run(served.state.reload(config))
    assert served.state.pipeline.router.unavailable.keys() == {"local"}  # built by the reload itself
    cards = _models(served.base)
    assert cards["local"]["state"] == "unavailable"
    assert ask(served.base, stream=True, model="local").provider == "extractive"
