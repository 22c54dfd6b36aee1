"""Fixtures for the server tests (loaded by conftest.py).

- ``fake_upstream``: a :class:`tests.fakes.FakeUpstream` on a loopback port, per test.
- ``fake_pm``: the ``pm`` fixture with the in-test plugins registered (retrievers
  ``static``/``broken``, provider ``local-style``, embedder ``hash``).
- ``running_server(config_text)``: starts the real lexrag server (uvicorn) on 127.0.0.1,
  a free port, in a background thread, and returns its base URL (``http://127.0.0.1:PORT``).
  Plugins come from ``pm``; register test plugins on it (or use ``fake_pm``) first.
- ``served_app(config_text)``: the same, giving a :class:`Served` (URL, server state, reload).
- ``sdk(base)``: the real openai SDK pointed at such a server (no retries).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pluggy
import pytest

from lexrag.config import load_config
from lexrag.registry import Registry, check_config

from .fakes import FakePlugins, FakeUpstream


@pytest.fixture
def fake_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
def fake_pm(pm: pluggy.PluginManager) -> pluggy.PluginManager:
    pm.register(FakePlugins(), name="lexrag-test-fakes")
    return pm


class _ServerThread:
    def __init__(self, app: object) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(
            target=self.server.run,
            kwargs={"sockets": [self.sock]},
            name=f"lexrag-server-{self.port}",
            daemon=True,
        )

    def start(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the lexrag server did not start; see the captured log")
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()


class Served:
    """A server started by ``served_app``: its URL, its state (the limiter, the cache, the
    metrics) and a way to reload its config as SIGHUP does, on the server's own loop."""

    def __init__(self, url: str, thread: _ServerThread, state: Any, registry: Registry, path: Path) -> None:
        self.url = url
        self.state = state
        self._thread = thread
        self._registry = registry
        self._path = path

    def reload(self, config_text: str) -> None:
        self._path.write_text(config_text, encoding="utf-8")
        config = check_config(load_config(self._path, env={}), self._registry)
        loop = self._thread.server.servers[0].get_loop()
        asyncio.run_coroutine_threadsafe(self.state.reload(config), loop).result(15)


@pytest.fixture
def served_app(pm: pluggy.PluginManager, tmp_path: Path) -> Iterator[Callable[[str], Served]]:
    """Starts the real server for a config text and gives a :class:`Served` (set
    ``served.state.limiter.clock`` or ``served.state.cache.clock`` to a fake clock before the
    first request); ``running_server`` gives only its URL."""
    from lexrag.server import create_app

    threads: list[_ServerThread] = []

    def start(config_text: str) -> Served:
        path = tmp_path / f"lexrag-server-{len(threads)}.toml"
        path.write_text(config_text, encoding="utf-8")
        registry = Registry(pm)
        config = check_config(load_config(path, env={}), registry)
        app = create_app(config, registry)
        thread = _ServerThread(app)
        threads.append(thread)
        return Served(thread.start(), thread, app.state.lexrag, registry, path)

    yield start
    for thread in threads:
        thread.stop()


@pytest.fixture
def running_server(served_app: Callable[[str], Served]) -> Callable[[str], str]:
    return lambda config_text: served_app(config_text).url


def sdk(base: str, key: str = "unused", timeout: float = 20) -> openai.OpenAI:
    """The openai SDK for the lexrag server at ``base``, with no retries of its own."""
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=timeout)
