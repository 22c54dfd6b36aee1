"""The CUDA path: fp16 export on the GPU, CUDAExecutionProvider, KV buffers in GPU memory.

Runs where ONNX Runtime can start CUDAExecutionProvider (and, for the export, PyTorch sees
a GPU); elsewhere each test is skipped with the reason (shown by ``pytest -ra``).
"""

from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime")

from lexrag import cuda_usable
from lexrag_local.engine import Engine
from lexrag_local.sampling import Sampler, SamplingParams
from lexrag_local.session import CUDA

pytestmark = pytest.mark.gpu
GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module")
def cuda() -> None:
    usable, why = cuda_usable()
    if not usable:
        pytest.skip(f"no CUDA for ONNX Runtime here: {why}")


@pytest.fixture(scope="module")
def torch_cuda(cuda) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("PyTorch sees no CUDA GPU (CPU build of torch?): the fp16 export needs one")


@pytest.fixture(scope="module")
def fp16_export(torch_cuda, tiny_llama_dir, tmp_path_factory):
    from lexrag_local.export import ExportOptions, export

    out = tmp_path_factory.mktemp("tiny-fp16")
    return export(
        ExportOptions(source=str(tiny_llama_dir), out_dir=out, device="cuda", dtype="fp16"), quiet=True
    )


def _greedy(engine: Engine, prompt: list[int], n: int) -> list[int]:
    return list(engine.decode(prompt, n, Sampler(GREEDY)))


PROMPT = [0, 6, 94, 92, 78, 120, 33, 7, 8]


def _kv_devices(engine: Engine) -> set[str]:
    cache = engine.cache
    buffers = [cache.buffers] if cache.shared else [*cache.batch, *cache.staging]
    return {b.ref(name).device_name().lower() for b in buffers for name in engine.spec.names}


def test_fp32_on_cuda_matches_cpu_with_kv_in_gpu_memory(cuda, tiny_onnx_dir):
    gpu = Engine(tiny_onnx_dir, device="cuda")
    assert gpu.providers[0] == CUDA and gpu.device == "cuda"
    tokens = _greedy(gpu, PROMPT, 24)
    assert _kv_devices(gpu) == {"cuda"}
    assert tokens == _greedy(Engine(tiny_onnx_dir, device="cpu"), PROMPT, 24)


def test_continuous_batch_on_cuda_equals_solo_and_copies_on_the_device(cuda, tiny_onnx_dir):
    """Staggered sequences joining and leaving a CUDA batch: every one equals its solo run,
    and the rows' moves run on the GPU (the copy graph, no host copy of the cache)."""
    import numpy as np

    from lexrag_local.kv import GraphCopier

    gpu = Engine(tiny_onnx_dir, device="cuda", max_batch=3)
    assert isinstance(gpu.cache.copier, GraphCopier)
    assert gpu.cache.copier.session.get_providers()[0] == CUDA
    solo = Engine(tiny_onnx_dir, device="cuda")
    rng = np.random.default_rng(0)
    prompts = [[0, *rng.integers(10, 500, size=n).tolist()] for n in (6, 30, 11, 19, 3)]
    limits = [28, 7, 20, 12, 16]
    expected = [_greedy(solo, p, n) for p, n in zip(prompts, limits, strict=True)]
    out: dict[int, list[int]] = {}
    seats: dict[int, object] = {}
    order = list(range(len(prompts)))
    while order or seats:
        while order and gpu.cache.seats_free:
            i = order.pop(0)
            seat = gpu.open()
            out[i] = [int(np.argmax(gpu.prefill(seat, prompts[i])))]
            gpu.join(seat)
            seats[i] = seat
        owner = {id(s): i for i, s in seats.items()}
        logits = gpu.step([out[owner[id(s)]][-1] for s in gpu.running])
        for seat, row in zip(list(gpu.running), logits, strict=True):
            out[owner[id(seat)]].append(int(np.argmax(row)))
        for i in [i for i, s in seats.items() if len(out[i]) >= limits[i]]:
            gpu.release(seats.pop(i))
    assert [out[i] for i in range(len(prompts))] == expected
    assert _kv_devices(gpu) == {"cuda"}


def test_fp16_export_on_cuda_passes_parity_and_generates(fp16_export):
    parity = fp16_export.manifest["parity"]
    assert parity["precision"] == "fp16" and parity["ok"], parity
    engine = Engine(fp16_export.out_dir, device="cuda")
    assert engine.providers[0] == CUDA
    assert engine.dtype.__name__ == "float16"
    assert len(_greedy(engine, PROMPT, 16)) == 16


def test_provider_health_reports_cuda(cuda, tiny_onnx_dir):
    import asyncio

    from lexrag_local.provider import LocalProvider
    from lexrag_local.settings import LocalSettings

    provider = LocalProvider("local", LocalSettings(model_dir=tiny_onnx_dir, device="cuda"))
    health = asyncio.run(provider.health())
    asyncio.run(provider.aclose())
    assert health["execution_providers"][0] == CUDA and health["device"] == "cuda"
    assert health["batch"]["max_batch"] == 8 and health["batch"]["kv_bytes"] > 0
