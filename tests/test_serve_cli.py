"""``lexrag serve`` on its port: "serving on" only once the port accepts connections, and a
port in use is one clear line and a non-zero exit."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from .conftest import free_port, serve_process


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "lexrag.toml"
    path.write_text("[retrieval]\nenabled = false\n", encoding="utf-8")
    return path


def test_port_in_use_is_one_line_and_a_non_zero_exit(config: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = serve_process(config, port)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    lines = out.strip().splitlines()
    assert lines == [
        f"Error: cannot listen on 127.0.0.1:{port}: address already in use; choose another --port"
    ], out
    assert "serving on" not in out


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="POSIX signals")
def test_serving_on_is_printed_once_the_port_accepts_connections(config: Path) -> None:
    port = free_port()
    proc = serve_process(config, port)
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "serving on" in line:
                break
        else:
            pytest.fail(f"lexrag serve exited without 'serving on':\n{''.join(seen)}")
        # Freeze the server the moment the line is out: the port must take a connection
        # anyway (the kernel completes it once the socket listens), not refuse it.
        proc.send_signal(signal.SIGSTOP)
        try:
            assert f"http://127.0.0.1:{port}" in line
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
        finally:
            proc.send_signal(signal.SIGCONT)
        response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=30)
        assert response.status_code == 200
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the port is free again once it stopped
        try:
            with socket.socket() as again:
                again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                again.bind(("127.0.0.1", port))
                break
        except OSError:
            time.sleep(0.1)
    else:
        pytest.fail(f"port {port} still in use after lexrag serve stopped")
