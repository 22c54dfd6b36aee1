"""What traces cost: a chat request's latency with traces off (the default) and on (every span
kept by the SDK's in-memory exporter), measured in the same run, and the cost of one tracing
call while traces are off.

    .venv/bin/python bench/bench_tracing.py [--quick] [--requests N] [--rounds R]

In one process, on loopback: a fake OpenAI-compatible upstream, the lexrag server (uvicorn, a
thread; retrieval by the test suite's static retriever) and an httpx client sending requests
one after another, non-streamed and streamed. Off and on alternate round by round so that
the machine's other load falls on both alike. Prints the median latency of each, the ratio
on/off, and the nanoseconds of ``tracing.span`` / ``tracing.headers`` while off against an
empty ``with`` block.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from lexrag import tracing  # noqa: E402
from lexrag.config import load_config  # noqa: E402
from lexrag.plugins import make_plugin_manager  # noqa: E402
from lexrag.registry import Registry, check_config  # noqa: E402
from lexrag.server import create_app  # noqa: E402
from tests.fakes import FakePlugins, FakeUpstream, Reply  # noqa: E402
from tests.fixtures_resilience import PRIMARY_ANSWER, QUESTION, chain_config  # noqa: E402
from tests.fixtures_server import _ServerThread  # noqa: E402


def _latencies(client: httpx.Client, base: str, n: int, stream: bool) -> list[float]:
    body = {"messages": [{"role": "user", "content": QUESTION}], "stream": stream}
    out = []
    for _ in range(n):
        started = time.perf_counter()
        response = client.post(f"{base}/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        out.append(time.perf_counter() - started)
    return out


def _micro() -> dict[str, float]:
    """Nanoseconds per call while traces are off."""
    assert not tracing.enabled()
    n = 200_000

    def empty() -> None:
        with contextlib.nullcontext():
            pass

    def span() -> None:
        with tracing.span("x") as s:
            s.set_attribute("k", 1)

    out = {}
    for name, fn in (("empty with", empty), ("tracing.span", span), ("tracing.headers", tracing.headers)):
        out[name] = min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e9
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few requests (a smoke run)")
    parser.add_argument("--requests", type=int, default=100, help="requests per round and mode")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n, rounds = (10, 2) if args.quick else (args.requests, args.rounds)
    logging.disable(logging.WARNING)

    pm = make_plugin_manager()
    pm.register(FakePlugins(), name="lexrag-test-fakes")
    upstream = FakeUpstream(model="primary-model").start()
    upstream.default = Reply(PRIMARY_ANSWER)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lexrag.toml"
        path.write_text(chain_config(upstream), encoding="utf-8")
        registry = Registry(pm)
        app = create_app(check_config(load_config(path, env={}), registry), registry)
        server = _ServerThread(app)
        base = server.start()
        results: dict[tuple[str, bool], list[float]] = {}
        spans = 0
        try:
            with httpx.Client(timeout=30) as client:
                _latencies(client, base, 5, False)  # warm up
                for _ in range(rounds):
                    for mode in ("off", "on"):
                        exporter = InMemorySpanExporter()
                        if mode == "on":
                            tracing.use(exporter)
                        for stream in (False, True):
                            results.setdefault((mode, stream), []).extend(_latencies(client, base, n, stream))
                        tracing.shutdown()
                        spans += len(exporter.get_finished_spans())
        finally:
            server.stop()
            upstream.stop()
    print(f"{rounds} rounds × {n} requests per mode and kind, sequential, loopback")
    for stream in (False, True):
        off = statistics.median(results[("off", stream)]) * 1e3
        on = statistics.median(results[("on", stream)]) * 1e3
        kind = "stream    " if stream else "non-stream"
        print(f"{kind}: median off {off:.2f} ms, on {on:.2f} ms, on/off {on / off:.3f}")
    print(f"spans exported while on: {spans / (rounds * n * 2):.1f} per request")
    micro = _micro()
    base_ns = micro.pop("empty with")
    print(
        f"off, per call: empty with {base_ns:.0f} ns; "
        + "; ".join(f"{k} {v:.0f} ns" for k, v in micro.items())
    )


if __name__ == "__main__":
    main()
