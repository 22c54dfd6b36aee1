"""What people use: ``lexrag ask``, the ``lexrag chat`` REPL in a real terminal (tmux), and the
web chat page in real headless Chromium. All against the real index of the sample corpus."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, cast

import pytest

from .conftest import CORPUS, ROOT, run_cli
from .fakes import Reply
from .fixtures_browser import chromium_page

QUESTION = "Thời gian thử việc đối với người quản lý doanh nghiệp tối đa là bao lâu?"
ARTIFACTS = ROOT / "artifacts"


@pytest.fixture(scope="module")
def demo_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    index = tmp_path_factory.mktemp("interfaces") / "index"
    result = run_cli("ingest", str(CORPUS), "--index", str(index))
    assert result.returncode == 0, result.stderr
    return index


def test_ask_streams_a_cited_answer(demo_index: Path) -> None:
    result = run_cli("ask", QUESTION, "--index", str(demo_index))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    answer, _, tail = out.partition("Sources:")
    assert "180 ngày" in answer and "Điều 25" in answer
    assert "[1] Bộ luật lao động" in tail and "Điều 25. Thời gian thử việc" in tail
    assert "Answered by: extractive" in tail


def test_ask_json_is_a_chat_completion_with_sources(demo_index: Path) -> None:
    result = run_cli("ask", QUESTION, "--index", str(demo_index), "--json", "--top-k", "3")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["object"] == "chat.completion" and data["model"] == "extractive"
    assert "180 ngày" in data["choices"][0]["message"]["content"]
    assert len(data["sources"]) == 3
    assert (data["sources"][0]["doc"], data["sources"][0]["article"]) == ("bo-luat-lao-dong", 25)
    assert data["usage"]["total_tokens"] > 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--provider", "nope"], "no provider named 'nope' is installed"),
        (["--index", "missing-index"], "lexrag ingest"),
    ],
)
def test_ask_errors_are_one_line(args: list[str], needle: str, demo_index: Path) -> None:
    if "--index" not in args:
        args = [*args, "--index", str(demo_index)]
    result = run_cli("ask", QUESTION, *args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr


# --- the REPL in a real terminal --------------------------------------------------------


class Tmux:
    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout

    def send(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.name, *keys)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-J", "-S", "-200", "-t", self.name)

    def wait_for(self, needle: str, timeout: float = 60.0, after: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if screen.count(needle) > after:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{needle!r} did not appear on the terminal; it shows:\n{self.screen()}")


@pytest.fixture
def tmux() -> Tmux:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (scripts/ci-apt.sh installs it)")
    session = Tmux(f"lexrag-test-{uuid.uuid4().hex[:8]}")
    yield session
    subprocess.run(["tmux", "kill-session", "-t", session.name], capture_output=True)


def test_chat_repl_in_a_real_terminal(tmux: Tmux, demo_index: Path, fake_upstream, tmp_path: Path) -> None:
    # A slow upstream behind the openai provider, so Ctrl-C lands mid-answer.
    fake_upstream.default = Reply(text="Đang trả lời rất chậm " * 20, chunk_delay=0.25)
    config = tmp_path / "lexrag.toml"
    config.write_text(
        f'[index]\ndir = "{demo_index}"\n'
        f'[providers.openai]\nbase_url = "{fake_upstream.base_url}"\napi_key = "sk-test"\nmodel = "fake-model"\n',
        encoding="utf-8",
    )
    command = f"{sys.executable} -m lexrag --config {config} chat --history-file {tmp_path / 'history'}"
    tmux.run("new-session", "-d", "-s", tmux.name, "-x", "150", "-y", "50", command)
    tmux.wait_for("/help lists commands")

    tmux.send(QUESTION, "Enter")
    screen = tmux.wait_for("answered by extractive")
    assert "180 ngày" in screen and "Sources" in screen and "Điều 25. Thời gian thử việc" in screen

    tmux.send("/k 2", "Enter")
    tmux.wait_for("Retrieving 2 passages")
    tmux.send("/provider nope", "Enter")
    tmux.wait_for("No provider 'nope'")
    tmux.send("/provider openai", "Enter")
    tmux.wait_for("Answering with openai.")
    tmux.send("Câu hỏi tiếp theo", "Enter")
    tmux.wait_for("Đang trả lời")
    tmux.send("C-c")
    tmux.wait_for("[answer stopped]")
    # The session survives Ctrl-C: it still answers.
    tmux.send("/provider extractive", "Enter")
    tmux.send("/rag on", "Enter")
    tmux.send("thoi gio lam viec binh thuong", "Enter")
    tmux.wait_for("answered by extractive", after=1)
    tmux.send("/sources", "Enter")
    tmux.send("/quit", "Enter")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        alive = subprocess.run(["tmux", "has-session", "-t", tmux.name], capture_output=True)
        if alive.returncode != 0:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("lexrag chat did not exit on /quit:\n" + tmux.screen())
    history = (tmp_path / "history").read_text(encoding="utf-8")
    assert QUESTION in history and "/quit" in history
    assert len(fake_upstream.requests) >= 1  # the openai turn reached the upstream


# --- the web page in real Chromium -----------------------------------------------------


def test_web_page_streams_answer_and_sources(running_server, demo_index: Path, tmp_path: Path) -> None:
    base = running_server(f'[index]\ndir = "{demo_index}"\n')
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page(tmp_path / "profile") as page:
        page.goto(base + "/")
        assert page.locator("h1").inner_text() == "Trợ lý tra cứu pháp luật"
        page.wait_for_function("document.querySelectorAll('#model option').length > 1")
        assert "extractive" in page.locator("#model").inner_text()
        page.fill("#question", QUESTION)
        page.click("#send")
        page.wait_for_selector(".turn.assistant .sources .source", timeout=30_000)
        answer = page.locator(".turn.assistant .answer").inner_text()
        assert "180 ngày" in answer
        sources = page.locator(".turn.assistant .sources").inner_text()
        assert "Nguồn trích dẫn" in sources and "Điều 25. Thời gian thử việc" in sources
        assert "extractive" in page.locator(".turn.assistant .who").inner_text()
        page.screenshot(path=str(ARTIFACTS / "web-chat.png"), full_page=True)

        # An error is shown readably, in Vietnamese.
        page.select_option("#model", "extractive")
        page.evaluate(
            "document.querySelector('#model').add(new Option('khong-co', 'khong-co'));"
            "document.querySelector('#model').value = 'khong-co';"
        )
        page.fill("#question", "câu hỏi thử lỗi")
        page.click("#send")
        error = page.wait_for_selector(".error", timeout=10_000)
        assert error.inner_text().startswith("Lỗi: Không tìm thấy mô hình")


def test_ask_falls_back_when_the_provider_is_unreachable(demo_index: Path) -> None:
    # Nothing listens on port 9 of loopback: the openai provider fails at connect.
    env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    args = ["ask", QUESTION, "--index", str(demo_index), "--provider", "openai"]
    failed = run_cli(*args, env=env)
    assert failed.returncode == 1 and failed.stderr.startswith("Error: ") and "Traceback" not in failed.stderr
    rescued = run_cli(*args, "--fallback", "extractive", env=env)
    assert rescued.returncode == 0, rescued.stderr
    assert "180 ngày" in rescued.stdout and "Answered by: extractive" in rescued.stdout


# --- issue 13, Interfaces ----------------------------------------------------------------

# The end of the newest ``selector`` on the page: where it is, where the fixed input bar
# starts, and whether the element is what the browser shows just above its end (not the bar).
LAST_ONE_SHOWN = """(selector) => {
  const all = document.querySelectorAll(selector);
  const node = all[all.length - 1];
  const r = node.getBoundingClientRect();
  const barTop = document.querySelector("#ask").getBoundingClientRect().top;
  const hit = document.elementFromPoint(r.left + 4, Math.min(r.bottom, barTop) - 4);
  return { top: r.top, bottom: r.bottom, barTop, shown: hit !== null && node.contains(hit) };
}"""


def _assert_shown(page, selector: str, when: str) -> None:
    box = page.evaluate(LAST_ONE_SHOWN, selector)
    assert 0 < box["bottom"] <= box["barTop"] and box["shown"], (
        f"{when}: the end of the newest {selector} is not in view above the input bar: {box}"
    )


def test_web_page_keeps_new_answers_and_errors_above_the_input_bar(
    running_server, demo_index: Path, fake_upstream, tmp_path: Path
) -> None:
    # The second answer streams slowly from the openai provider, line by line, and ends up
    # taller than the window.
    lines = [f"Dòng {i}: người lao động được hưởng quyền theo khoản {i} [1]." for i in range(1, 41)]
    fake_upstream.default = Reply(text="\n".join(lines), chunk_delay=0.02)
    base = running_server(
        f'[index]\ndir = "{demo_index}"\n'
        f'[providers.openai]\nbase_url = "{fake_upstream.base_url}"\napi_key = "sk-test"\nmodel = "fake-model"\n'
    )
    with chromium_page(tmp_path / "profile", viewport={"width": 1000, "height": 700}) as page:
        page.goto(base + "/")
        page.wait_for_function("document.querySelectorAll('#model option').length > 2")

        # First question: the extractive answer and its sources fill more than the window.
        page.fill("#question", QUESTION)
        page.click("#send")
        page.wait_for_selector(".turn.assistant .sources .source", timeout=30_000)
        page.wait_for_function("!document.querySelector('#send').disabled")
        assert page.evaluate("document.documentElement.scrollHeight") > 2 * 700

        # Second question: its answer stays in view above the bar while it streams and after.
        page.select_option("#model", "openai")
        page.fill("#question", "Người lao động có những quyền gì?")
        page.click("#send")
        page.wait_for_function(
            "document.querySelectorAll('.turn.assistant').length === 2"
            " && document.querySelectorAll('.turn.assistant')[1].innerText.includes('Dòng 12:')"
            " && !document.querySelector('#stop').disabled",
            timeout=30_000,
        )
        _assert_shown(page, ".turn.assistant .answer", "while the second answer streams")
        page.wait_for_function("!document.querySelector('#send').disabled", timeout=30_000)
        assert "Dòng 40:" in page.locator(".turn.assistant .answer").nth(1).inner_text()
        _assert_shown(page, ".turn.assistant .answer", "after the second answer")

        # An error (the server rejects an unknown model) is in view too.
        page.evaluate(
            "document.querySelector('#model').add(new Option('khong-co', 'khong-co'));"
            "document.querySelector('#model').value = 'khong-co';"
        )
        page.fill("#question", "câu hỏi thử lỗi")
        page.click("#send")
        page.wait_for_selector(".turn.assistant .error", timeout=10_000)
        _assert_shown(page, ".turn.assistant .error", "after an error")
        page.screenshot(path=str(tmp_path / "web-after-error.png"))


def test_chat_repl_refuses_openai_without_a_key(tmux: Tmux, demo_index: Path, tmp_path: Path) -> None:
    # No OPENAI_API_KEY and no [providers.openai] table: switching says what is missing and
    # keeps the provider in use, instead of failing the next question with an HTTP message.
    config = tmp_path / "lexrag.toml"
    config.write_text(f'[index]\ndir = "{demo_index}"\n', encoding="utf-8")
    command = (
        f"env -u OPENAI_API_KEY -u OPENAI_BASE_URL {sys.executable} -m lexrag --config {config} "
        f"chat --history-file {tmp_path / 'history'}"
    )
    tmux.run("new-session", "-d", "-s", tmux.name, "-x", "150", "-y", "50", command)
    tmux.wait_for("/help lists commands")
    tmux.send("/provider openai", "Enter")
    screen = tmux.wait_for("still answering with extractive.")
    refusal = next(line for line in screen.splitlines() if "still answering with extractive." in line)
    assert refusal.startswith("openai is not configured: set OPENAI_API_KEY"), screen
    assert "Answering with openai" not in screen
    tmux.send(QUESTION, "Enter")
    screen = tmux.wait_for("answered by extractive")
    assert "180 ngày" in screen and "GET /v1/models" not in screen and "Error" not in screen
    tmux.send("/quit", "Enter")


def _repl(config_text: str, tmp_path: Path, pm) -> tuple[Any, Any]:
    from rich.console import Console

    from lexrag.config import load_config
    from lexrag.pipeline import Pipeline
    from lexrag.registry import Registry, check_config
    from lexrag.repl import Repl

    path = tmp_path / "lexrag.toml"
    path.write_text(config_text, encoding="utf-8")
    registry = Registry(pm)
    config = check_config(load_config(path, env={}), registry)
    console = Console(record=True, width=400, color_system=None)
    return Repl(Pipeline(config, registry), registry.providers.names(), console=console), console


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ("[providers.local]\n", "needs model_dir"),  # cannot be built
        ('[providers.local]\nurl = "http://127.0.0.1:{port}"\n', "cannot be reached"),  # health: down
        ('[providers.openai]\nmodel = "gpt-4o-mini"\n', "no API key"),  # health: unauthorized
    ],
    ids=["unbuildable", "down", "no-key"],
)
def test_repl_provider_switch_keeps_a_provider_that_can_answer(
    table: str, needle: str, demo_index: Path, tmp_path: Path, pm, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .conftest import free_port

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    name = table.split(".")[1].split("]")[0]
    repl, console = _repl(f'[index]\ndir = "{demo_index}"\n' + table.format(port=free_port()), tmp_path, pm)

    async def switch() -> None:
        try:
            assert await repl.command(f"/provider {name}")
        finally:
            await repl.pipeline.aclose()

    asyncio.run(switch())
    out = [line.strip() for line in console.export_text().splitlines() if line.strip()]
    assert len(out) == 1, out
    assert out[0].startswith(f"{name} cannot answer: ") and needle in out[0], out
    assert out[0].endswith("; still answering with extractive."), out
    assert repl.state.provider is None and repl.current_provider == "extractive"


ARTICLE = (
    "Điều 5. Quyền và nghĩa vụ của người lao động\n"
    "1. Người lao động có các quyền sau đây:\n"
    "a) Làm việc; tự do lựa chọn việc làm, nơi làm việc;\n"
    "b) Hưởng lương phù hợp với trình độ;\n"
    "c) Thành lập, gia nhập tổ chức đại diện người lao động.\n"
    "2. Người lao động có các nghĩa vụ sau đây:"
)


class _QuotingPipeline:
    """Streams an answer that quotes ARTICLE, the way the extractive provider does."""

    async def chat_stream(self, request: Any) -> Any:
        from lexrag.types import ChunkFactory, Source

        chunks = ChunkFactory("stub")
        yield chunks.role()
        answer = "Theo [1] Bộ luật lao động, Điều 5:\n\n" + "\n".join(
            "> " + line for line in ARTICLE.split("\n")
        )
        for piece in re.findall(r"\S+\s*|\s+", answer):
            yield chunks.text(piece)
        last = chunks.finish("stop")
        last.sources = [
            Source(
                index=1,
                doc="bo-luat-lao-dong",
                title="Bộ luật lao động",
                article=5,
                citation="Bộ luật lao động, Điều 5",
                score=1.0,
                text=ARTICLE,
            )
        ]
        yield last


def test_repl_keeps_the_lines_of_a_quoted_article() -> None:
    from rich.console import Console

    from lexrag.repl import Repl

    console = Console(record=True, width=200, color_system=None)
    repl = Repl(cast(Any, _QuotingPipeline()), ["stub"], console=console)
    asyncio.run(repl.answer("Người lao động có quyền gì?"))
    text = console.export_text()
    answer, _, panel = text.partition("Sources")
    for shown in (answer, panel):
        starts = [re.sub(r"^[\s▌│]+", "", line) for line in shown.splitlines()]
        for point in ("a) Làm việc", "b) Hưởng lương", "c) Thành lập"):
            assert any(s.startswith(point) for s in starts), f"{point!r} does not start a line:\n{shown}"
