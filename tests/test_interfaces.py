"""What people use: ``lexrag ask``, the ``lexrag chat`` REPL in a real terminal (tmux), and the
web chat page in real headless Chromium. All against the real index of the sample corpus."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from .conftest import CORPUS, ROOT, run_cli
from .fakes import Reply

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

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def test_web_page_streams_answer_and_sources(running_server, demo_index: Path, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (scripts/ci-apt.sh installs it)")
    playwright = pytest.importorskip("playwright.sync_api")
    base = running_server(f'[index]\ndir = "{demo_index}"\n')
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = context.new_page()
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
        finally:
            context.close()


def test_ask_falls_back_when_the_provider_is_unreachable(demo_index: Path) -> None:
    # Nothing listens on port 9 of loopback: the openai provider fails at connect.
    env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    args = ["ask", QUESTION, "--index", str(demo_index), "--provider", "openai"]
    failed = run_cli(*args, env=env)
    assert failed.returncode == 1 and failed.stderr.startswith("Error: ") and "Traceback" not in failed.stderr
    rescued = run_cli(*args, "--fallback", "extractive", env=env)
    assert rescued.returncode == 0, rescued.stderr
    assert "180 ngày" in rescued.stdout and "Answered by: extractive" in rescued.stdout
