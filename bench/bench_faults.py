"""Faults and load: the fault matrix, and latency under 30 % injected failures against a
baseline without failures measured in the same run.

    .venv/bin/python bench/bench_faults.py [--quick] [--requests N] [--clients C] [--rate R]

In one process, on loopback: two fake OpenAI-compatible upstreams (primary, backup), the
lexrag server (uvicorn, a thread) with the chain ``openai`` → ``openai-backup``, and the real
openai SDK as client. Prints:

1. the fault matrix: each upstream fault × (non-stream, stream) × (once, always with a
   fallback, always without) → what the client got;
2. the load figures (requests, successes, fallbacks, errors, hung, p50/p99) of N requests
   from C clients, with no failures (baseline) and with R of the primary's answers failing,
   and the ratios of the second to the first.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lexrag.config import load_config  # noqa: E402
from lexrag.plugins import make_plugin_manager  # noqa: E402
from lexrag.registry import Registry, check_config  # noqa: E402
from lexrag.server import create_app  # noqa: E402
from tests.fakes import FakePlugins, FakeUpstream, Reply  # noqa: E402
from tests.fixtures_resilience import (  # noqa: E402
    BACKUP_ANSWER,
    PRIMARY_ANSWER,
    BackupPlugins,
    LoadResult,
    ask,
    chain_config,
    chaos,
    run_load,
)
from tests.fixtures_server import _ServerThread  # noqa: E402
from tests.test_faults import CASES, SCENARIOS  # noqa: E402


class Stack:
    """Two upstreams and a lexrag server for one config."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.primary = FakeUpstream(model="primary-model").start()
        self.backup = FakeUpstream(model="backup-model").start()
        self.server: _ServerThread | None = None

    def serve(self, config_text: str) -> str:
        self.stop_server()
        self.primary.clear()
        self.backup.clear()
        self.primary.default, self.backup.default = Reply(PRIMARY_ANSWER), Reply(BACKUP_ANSWER)
        path = self.workdir / "lexrag.toml"
        path.write_text(config_text, encoding="utf-8")
        pm = make_plugin_manager()
        pm.register(FakePlugins(), name="fakes")
        pm.register(BackupPlugins(), name="backup")
        registry = Registry(pm)
        self.server = _ServerThread(create_app(check_config(load_config(path, env={}), registry), registry))
        return self.server.start()

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def close(self) -> None:
        self.stop_server()
        self.primary.stop()
        self.backup.stop()


def fault_matrix(stack: Stack, scenarios: list[str]) -> None:
    width = max(len(c) for c in CASES) + 2
    print("fault matrix (client: openai SDK; cell: what it got)")
    for scenario in scenarios:
        print(f"\n[{scenario}]\n{'case':<{width}}| {'non-stream':<40}| stream")
        for case, (behaviour, _) in CASES.items():
            cells = []
            for stream in (False, True):
                backup = stack.backup if scenario == "always+fallback" else None
                base = stack.serve(chain_config(stack.primary, backup, llm="breaker_failures = 100\n"))
                if scenario == "once":
                    stack.primary.script(behaviour)
                else:
                    stack.primary.default = behaviour
                cells.append(ask(base, stream=stream).label())
            print(f"{case:<{width}}| {cells[0]:<40}| {cells[1]}")


def load(stack: Stack, requests: int, clients: int, rate: float) -> tuple[LoadResult, LoadResult]:
    llm = "breaker_failures = 10\nbreaker_window_s = 1\nbreaker_cooldown_s = 0.5\n"
    results = []
    for failure_rate in (0.0, rate):
        base = stack.serve(chain_config(stack.primary, stack.backup, deadline=5.0, llm=llm))
        stack.primary.script(*chaos(requests, failure_rate))
        results.append(asyncio.run(run_load(base, requests=requests, concurrency=clients)))
    return results[0], results[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run (under a minute)")
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rate", type=float, default=0.3, help="share of the primary's answers that fail")
    args = parser.parse_args()
    requests = args.requests or (100 if args.quick else 200)
    logging.getLogger("lexrag").setLevel(logging.ERROR)  # the runs log every failure on purpose

    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp))
        try:
            fault_matrix(stack, SCENARIOS[1:] if args.quick else SCENARIOS)
            baseline, faulty = load(stack, requests, args.clients, args.rate)
        finally:
            stack.close()
    print(f"\nload: {requests} requests from {args.clients} clients, half streamed, fallback configured")
    print(f"  baseline (0 % failures):        {baseline.summary()}")
    print(f"  with {args.rate:.0%} injected failures:  {faulty.summary()}")
    print(
        f"  ratio (failures / baseline): p50 {faulty.percentile(0.5) / baseline.percentile(0.5):.2f}x, "
        f"p99 {faulty.percentile(0.99) / baseline.percentile(0.99):.2f}x, "
        f"throughput {(faulty.requests / faulty.seconds) / (baseline.requests / baseline.seconds):.2f}x"
    )
    ok = faulty.hung == 0 and not faulty.bad and baseline.hung == 0 and not baseline.bad
    print(f"  hung or unclean answers: {'none' if ok else faulty.bad[:5] + baseline.bad[:5]}")


if __name__ == "__main__":
    main()
