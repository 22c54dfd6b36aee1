"""Server overhead: lexrag (retrieval off) in front of a fake upstream, against the SDK straight
to the same upstream.

    .venv/bin/python bench/bench_server.py [--quick] [--requests N] [--concurrency C]

Three processes on loopback: the fake OpenAI upstream, ``lexrag serve`` (openai provider
pointed at the upstream, ``[retrieval] enabled = false``), and this client (the real
``openai`` SDK). Prints latency p50/p99 of both paths, the overhead (lexrag − direct), and
requests/s at C concurrent clients, each as a ratio to the direct baseline measured in the
same run. Goal: overhead p50 ≤ 2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = [{"role": "user", "content": "Thời giờ làm việc bình thường một ngày là bao nhiêu giờ?"}]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_upstream() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", "from tests.fakes.upstream import main; main()"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}/v1"


def _start_lexrag(upstream: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    config = workdir / "lexrag.toml"
    config.write_text(
        '[llm]\nprovider = "openai"\n[retrieval]\nenabled = false\n[logging]\nlevel = "WARNING"\n'
        f'[providers.openai]\nbase_url = "{upstream}"\nmodel = "fake-model"\n',
        encoding="utf-8",
    )
    return serve(config, workdir)


def serve(config: Path, workdir: Path, timeout: float = 60) -> tuple[subprocess.Popen[bytes], str]:
    """``lexrag serve`` with ``config`` on a free port; (the process, its ``/v1`` URL) once healthy."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LEXRAG_", "LLM_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lexrag", "--config", str(config), "serve", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, f"{base}/v1"
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"lexrag serve did not start within {timeout:g} s")


def _latencies(client: openai.OpenAI, n: int, stream: bool) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        if stream:
            for _chunk in client.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True):
                pass
        else:
            client.chat.completions.create(model="fake-model", messages=MESSAGES)
        out.append(time.perf_counter() - start)
    return out


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] * 1000


async def _throughput(base_url: str, total: int, concurrency: int) -> float:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0)
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await client.chat.completions.create(model="fake-model", messages=MESSAGES)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    await client.close()
    return total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run (well under a minute)")
    parser.add_argument(
        "--requests", type=int, default=None, help="sequential requests per path (default 1000)"
    )
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    n = args.requests or (200 if args.quick else 1000)
    total = 400 if args.quick else 2000

    upstream_proc, upstream = _start_upstream()
    with tempfile.TemporaryDirectory() as tmp:
        lexrag_proc, lexrag = _start_lexrag(upstream, Path(tmp))
        try:
            direct = openai.OpenAI(base_url=upstream, api_key="bench", max_retries=0)
            proxied = openai.OpenAI(base_url=lexrag, api_key="bench", max_retries=0)
            print(f"bench_server: {n} sequential requests per path, {total} at {args.concurrency} concurrent")
            for stream in (False, True):
                _latencies(direct, 50, stream)
                _latencies(proxied, 50, stream)
                base_l: list[float] = []
                lex_l: list[float] = []
                for _ in range(10):  # interleaved blocks, so drift hits both paths alike
                    base_l += _latencies(direct, n // 10, stream)
                    lex_l += _latencies(proxied, n // 10, stream)
                b50, b99, l50, l99 = _pct(base_l, 50), _pct(base_l, 99), _pct(lex_l, 50), _pct(lex_l, 99)
                kind = "stream" if stream else "json"
                print(
                    f"  {kind:6} direct p50 {b50:6.2f} ms p99 {b99:6.2f} ms | via lexrag p50 {l50:6.2f} ms "
                    f"p99 {l99:6.2f} ms | overhead p50 {l50 - b50:5.2f} ms p99 {l99 - b99:5.2f} ms "
                    f"| ratio p50 {l50 / b50:4.2f}x"
                )
            base_rps = asyncio.run(_throughput(upstream, total, args.concurrency))
            lex_rps = asyncio.run(_throughput(lexrag, total, args.concurrency))
            print(
                f"  throughput at {args.concurrency} clients: direct {base_rps:7.0f} req/s, via lexrag "
                f"{lex_rps:7.0f} req/s ({lex_rps / base_rps:4.2f}x of direct)"
            )
        finally:
            lexrag_proc.terminate()
            lexrag_proc.wait(20)
            assert upstream_proc.stdin is not None
            upstream_proc.stdin.close()
            upstream_proc.wait(20)


if __name__ == "__main__":
    main()
