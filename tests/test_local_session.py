"""``[providers.local] spin`` and ``threads``: validated in the config and reaching the CPU
session's options, whose thread count is explicit (so onnxruntime pins no thread);
bench_batching's genai side with spinning off reaching onnxruntime-genai's session."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lexrag import cpu_threads
from lexrag.config import load_config
from lexrag.errors import ConfigError
from lexrag.registry import build_provider, check_config

pytest.importorskip("onnxruntime")

from lexrag_local.session import SPINNING

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _session_options(registry, config_file, table: str) -> tuple[str, int]:
    """The CPU session's spinning entry and intra-op thread count."""
    config_file.write_text(f'[llm]\nprovider = "local"\n[providers.local]\n{table}')
    provider = build_provider(check_config(load_config(config_file, env={}), registry), registry)

    async def load() -> tuple[str, int]:
        try:
            worker = await provider.backend.worker()
            options = worker.engine.session.get_session_options()
            return options.get_session_config_entry(SPINNING), options.intra_op_num_threads
        finally:
            await provider.aclose()

    return asyncio.run(load())


def test_spin_and_threads_settings_reach_the_cpu_session(registry, tiny_onnx_dir, tmp_path):
    config_file = tmp_path / "lexrag.toml"
    model = f'model_dir = "{tiny_onnx_dir}"\n'
    # threads = 0 is an explicit count of the cores this process may use, never onnxruntime's 0.
    assert _session_options(registry, config_file, model) == ("0", cpu_threads())
    assert cpu_threads() >= 1
    assert _session_options(registry, config_file, model + "spin = true\nthreads = 3\n") == ("1", 3)
    config_file.write_text(f'[providers.local]\n{model}spin = "sometimes"\n')
    with pytest.raises(ConfigError, match=r"\[providers.local\] spin"):
        check_config(load_config(config_file, env={}), registry)


_PINNING = """
import json, os, sys
from pathlib import Path
from lexrag import cpu_threads
from lexrag_local.engine import Engine
from lexrag_local.sampling import Sampler, SamplingParams
cpus = sorted(os.sched_getaffinity(0))
if len(sys.argv) > 2:
    os.sched_setaffinity(0, cpus[:1])
engine = Engine(Path(sys.argv[1]))
list(engine.decode([1, 2, 3], 4, Sampler(SamplingParams(temperature=0.0))))
allowed = {t.name: os.sched_getaffinity(int(t.name)) for t in Path("/proc/self/task").iterdir()}
print(json.dumps({
    "mask": sorted(os.sched_getaffinity(0)),
    "threads": engine.session.get_session_options().intra_op_num_threads,
    "cpu_threads": cpu_threads(),
    "pinned": sorted(t for t, a in allowed.items() if a != os.sched_getaffinity(0)),
}))
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_getaffinity"), reason="needs Linux affinity masks")
def test_cpu_session_threads_follow_the_affinity_mask_and_pin_nothing(tiny_onnx_dir):
    """A decode on a CPU session leaves every thread of the process free to run on every CPU
    of its mask (onnxruntime's own default count pins them, and ignores a ``taskset``); under a
    one-CPU mask the session has one thread."""

    def run(*extra: str) -> dict:
        out = subprocess.run(
            [sys.executable, "-c", _PINNING, str(tiny_onnx_dir), *extra],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return json.loads(out.stdout.splitlines()[-1])

    free = run()
    assert free["threads"] == free["cpu_threads"] >= 1
    assert free["pinned"] == [], f"threads pinned to a CPU: {free['pinned']} (mask {free['mask']})"
    one = run("one-cpu")
    assert len(one["mask"]) == 1
    assert one["threads"] == one["cpu_threads"] == 1


def test_bench_genai_spin_off_reaches_genais_session(genai_python, tiny_llama_dir, tmp_path):
    """bench_batching's ``--genai-spin off`` side: the key it writes into genai_config.json's
    session_options reaches onnxruntime-genai's session (onnxruntime's verbose trace of the
    session options lists it); the default side leaves genai's spinning as it is."""
    from lexrag_local.genai_builder import build

    sys.path.insert(0, str(BENCH))
    import bench_batching

    built = tmp_path / "built"
    build(str(tiny_llama_dir), built, python=genai_python, precision="fp32", device="cpu")
    (built / "int8-full.onnx").symlink_to(built / "model.onnx")  # the file genai_dir names

    def trace(spin: bool) -> str:
        out = bench_batching.genai_dir(built, tmp_path / f"spin-{spin}", 2, spin=spin)
        config = json.loads((out / "genai_config.json").read_text())
        config["model"]["decoder"]["session_options"]["log_severity_level"] = 0
        (out / "genai_config.json").write_text(json.dumps(config))
        load = subprocess.run(
            [genai_python, "-c", f"import onnxruntime_genai as og; og.Model({str(out)!r})"],
            capture_output=True,
            text=True,
            check=True,
        )
        (line,) = [x for x in load.stderr.splitlines() if "Session Options {" in x]
        return line.split("config_options:", 1)[1]

    assert f"{SPINNING}: 0" in trace(False)
    assert SPINNING not in trace(True)
