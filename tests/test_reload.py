"""``lexrag serve`` as a process: SIGHUP reloads the config without dropping requests in
flight; SIGTERM stops gracefully, ending streams cleanly within the grace period."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import free_port, wait_healthy
from .fakes import FakeUpstream, Reply
from .fixtures_resilience import QUESTION

SERVER_KEY = "srv-SECRET-reload-key"
UPSTREAM_KEY = "sk-SECRET-reload-upstream"
AUTH = {"Authorization": f"Bearer {SERVER_KEY}"}
LONG = " ".join(f"từ{i}" for i in range(40))

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")


def _config(upstream: FakeUpstream, model: str, grace: float = 10) -> str:
    return (
        '[llm]\nprovider = "openai"\ndeadline_s = 10\n'
        "[retrieval]\nenabled = false\n"
        f'[server]\napi_keys = ["{SERVER_KEY}"]\nshutdown_grace_s = {grace}\n'
        f'[providers.openai]\nbase_url = "{upstream.base_url}"\nmodel = "{model}"\napi_key = "{UPSTREAM_KEY}"\n'
    )


class Serve:
    """``lexrag serve`` in a subprocess, its output collected."""

    def __init__(self, config: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LEXRAG_", "LLM_"))}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lexrag", "--config", str(config), "serve", "--port", str(self.port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.output = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_healthy(self.proc, self.base, timeout=60, output=lambda: self.output.decode(errors="replace"))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output += line

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(30)
        self._reader.join(5)
        return self.output.decode("utf-8", "replace")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    started: list[Serve] = []

    def start(text: str) -> Serve:
        path = tmp_path / "lexrag.toml"
        path.write_text(text, encoding="utf-8")
        started.append(Serve(path))
        return started[-1]

    yield start
    for server in started:
        server.stop()


class StreamReader(threading.Thread):
    """Reads one streamed answer in the background; ``first`` is set at the first token."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.first = threading.Event()
        self.text = ""
        self.finish: list[str] = []
        self.errors: list[dict[str, Any]] = []
        self.done = False
        self.failure: Exception | None = None

    def run(self) -> None:
        body = {"model": "openai", "messages": [{"role": "user", "content": QUESTION}], "stream": True}
        try:
            with httpx.stream(
                "POST", f"{self.base}/v1/chat/completions", json=body, headers=AUTH, timeout=30
            ) as response:
                for line in response.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    if line == "data: [DONE]":
                        self.done = True
                        continue
                    event = json.loads(line[6:])
                    if "error" in event:
                        self.errors.append(event["error"])
                        continue
                    for choice in event["choices"]:
                        self.text += choice["delta"].get("content") or ""
                        if choice["delta"].get("content"):
                            self.first.set()
                        if choice["finish_reason"]:
                            self.finish.append(choice["finish_reason"])
        except Exception as exc:  # the test asserts on it
            self.failure = exc
        finally:
            self.first.set()


def test_sighup_reloads_without_dropping_requests_in_flight(serve, tmp_path):
    with FakeUpstream(model="model-a") as a, FakeUpstream(model="model-b") as b:
        a.default = Reply(LONG, chunk_delay=0.05)
        b.default = Reply("Câu trả lời của B.")
        server = serve(_config(a, "model-a"))
        reader = StreamReader(server.base)
        reader.start()
        assert reader.first.wait(10)

        (tmp_path / "lexrag.toml").write_text(_config(b, "model-b"), encoding="utf-8")
        server.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while httpx.get(f"{server.base}/health").json()["reloads"] < 1:
            assert time.monotonic() < deadline, "the config was not reloaded"
            time.sleep(0.05)
        new = httpx.post(
            f"{server.base}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": QUESTION}]},
            headers=AUTH,
            timeout=10,
        ).json()
        assert new["model"] == "model-b" and new["choices"][0]["message"]["content"] == "Câu trả lời của B."
        reader.join(30)
        # The stream that started before the reload finished, whole, from A.
        assert reader.failure is None and reader.done and not reader.errors
        assert reader.text == LONG and reader.finish == ["stop"]
        assert len([r for r in a.requests if r.method == "POST"]) == 1

        # A config that does not validate is refused; the server keeps the one it has.
        (tmp_path / "lexrag.toml").write_text("[llm]\nprovider = 3\n", encoding="utf-8")
        server.signal(signal.SIGHUP)
        time.sleep(0.5)
        assert server.proc.poll() is None
        health = httpx.get(f"{server.base}/health").json()
        assert health["reloads"] == 1 and health["status"] == "ok"
        output = server.stop()
    assert "config reload failed" in output
    assert '"model": "model-b"' in output  # the call log reached stderr as JSON lines
    assert SERVER_KEY not in output and UPSTREAM_KEY not in output


def test_sigterm_lets_requests_finish_and_ends_long_streams_cleanly(serve):
    with FakeUpstream(model="model-a") as a:
        server = serve(_config(a, "model-a", grace=3))
        short, long = StreamReader(server.base), StreamReader(server.base)
        a.script(Reply("một hai ba bốn năm", chunk_delay=0.2), Reply(LONG, chunk_delay=0.3))
        short.start()
        assert short.first.wait(10)
        long.start()
        assert long.first.wait(10)

        server.signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.TransportError):  # no new connections
            httpx.get(f"{server.base}/health", timeout=2)
        short.join(20)
        long.join(20)
        server.proc.wait(20)
    # The short answer finished within the grace period.
    assert short.failure is None and short.done and short.text == "một hai ba bốn năm"
    assert short.finish == ["stop"] and not short.errors
    # The long one was ended cleanly: no finish_reason, an error event, [DONE].
    assert long.failure is None and long.done and long.finish == []
    assert long.errors and long.errors[0]["code"] == "server_shutting_down"
    assert long.text and LONG.startswith(long.text) and long.text != LONG


def test_config_show_prints_the_chain(cli, tmp_path):
    path = tmp_path / "lexrag.toml"
    path.write_text('[llm]\nprovider = "openai"\nfallback = ["extractive"]\n', encoding="utf-8")
    shown = cli("--config", str(path), "config", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["chain"] == ["openai", "extractive"]
    table = cli("--config", str(path), "config", "show", env={"COLUMNS": "200"})
    assert "provider chain: openai -> extractive" in table.stdout
