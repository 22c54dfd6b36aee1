"""Shared fixtures: a clean environment per test and one fresh plugin manager."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pluggy
import pytest
from hypothesis import settings

from lexrag.config import ENV_OVERRIDES
from lexrag.plugins import make_plugin_manager
from lexrag.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CORPUS = SHARED / "data" / "vn-legal" / "docs"
DEV_QUESTIONS = SHARED / "data" / "vn-legal" / "dev.jsonl"

_ENV_VARS = [*ENV_OVERRIDES, "LEXRAG_CONFIG"]

# Property tests and schemathesis draw the same examples on every run ("repeatable"), so a
# CI result can be reproduced; HYPOTHESIS_PROFILE=explore draws fresh ones to look for new
# failures (run it before a release and turn what it finds into a named test).
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

# Each area keeps its fixtures in its own module, so parallel work does not collide here.
pytest_plugins = [
    "tests.fixtures_retrieval",
    "tests.fixtures_server",
    "tests.fixtures_local",
    "tests.fixtures_resilience",
    "tests.fixtures_postgres",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No lexrag variable leaks in from the developer's shell; cwd is a fresh directory."""
    for var in _ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@pytest.fixture
def pm() -> pluggy.PluginManager:
    """A fresh plugin manager: the core's default plugins and every installed entry point.
    Tests register their own plugins on it with ``pm.register(obj)``."""
    return make_plugin_manager()


@pytest.fixture
def registry(pm: pluggy.PluginManager) -> Registry:
    return Registry(pm)


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, python: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real ``lexrag`` command line in a subprocess."""
    full_env = {k: v for k, v in os.environ.items() if k not in _ENV_VARS}
    full_env.update(env or {})
    return subprocess.run(
        [python or sys.executable, "-m", "lexrag", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture
def cli():
    return run_cli


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(
    proc: subprocess.Popen[Any], base: str, *, timeout: float, output: Callable[[], str]
) -> dict[str, Any]:
    """Wait until ``lexrag serve`` in ``proc`` answers ``GET base/health`` with a 2xx (what
    ``curl -f`` and compose's healthcheck wait for) and return that body. Fails with the
    server's ``output()`` if it exits or does not come up within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"lexrag serve exited ({proc.returncode}):\n{output()}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5) as resp:
                body: dict[str, Any] = json.loads(resp.read())
                return body
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    pytest.fail(f"lexrag serve did not become healthy within {timeout:g} s:\n{output()}")


def serve_process(config: Path, port: int, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``lexrag --config CONFIG serve --port PORT`` in a subprocess, without the caller's
    OPENAI_*/LEXRAG_*/LLM_* variables (``env`` is added), stdin closed, stdout and stderr
    together as text. Not waited for (:func:`wait_healthy` does)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LEXRAG_", "LLM_"))}
    return subprocess.Popen(
        [sys.executable, "-m", "lexrag", "--config", str(config), "serve", "--port", str(port)],
        env={**clean, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop_processes(procs: Iterable[subprocess.Popen[Any]], *, timeout: float = 30) -> None:
    """Terminate every process of ``procs``, then wait for each; one still running after
    ``timeout`` seconds is killed."""
    procs = list(procs)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
