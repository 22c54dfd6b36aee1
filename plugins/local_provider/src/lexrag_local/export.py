"""``lexrag model export``: a checkpoint directory, a hub id, or a GGUF file (dequantised to a
checkpoint first); optimum export (or onnxruntime-genai's builder), last-position logits,
quantization, tokenizer and generation config beside the model, parity check, and a manifest
that makes re-runs free."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from lexrag import ModelExportError

from . import gguf
from .memory import GB, available_bytes, needed_bytes, parameter_count
from .model_files import MANIFEST_FILE, MODEL_FILE
from .parity import DEFAULT_MAX_TOP1_CHANGES, Parity

#: Bump when the export pipeline changes what it writes, so old exports are redone.
PIPELINE_VERSION = 2

#: Where a GGUF source is dequantised to a checkpoint (inside the output, removed after).
GGUF_CHECKPOINT = ".gguf-checkpoint"

Device = Literal["cpu", "cuda"]
DType = Literal["fp32", "fp16"]
Quantize = Literal["none", "int8", "int8-block", "int4"]
Builder = Literal["optimum", "genai"]


@dataclass(frozen=True)
class ExportOptions:
    source: str
    out_dir: Path
    device: Device = "cpu"
    dtype: DType = "fp32"
    quantize: Quantize = "none"
    revision: str = "main"
    check_memory: bool = True
    parity: bool = True
    #: optimum's export (one op per PyTorch op), or onnxruntime-genai's builder (fused graph).
    builder: Builder = "optimum"
    #: The interpreter that runs the genai builder (None: $LEXRAG_GENAI_PYTHON, or this one).
    genai_python: str | None = None
    #: A GGUF file of the hub repository (or directory) ``source``; a ``source`` ending in
    #: .gguf is a GGUF file itself.
    gguf_file: str | None = None
    #: The parity check refuses an export whose top-1 tokens differ from PyTorch's at more
    #: than this share of the compared positions.
    max_top1_changes: float = DEFAULT_MAX_TOP1_CHANGES

    @property
    def precision(self) -> str:
        return self.quantize if self.quantize != "none" else self.dtype


@dataclass
class ExportResult:
    out_dir: Path
    reused: bool
    manifest: dict[str, Any]

    def summary(self) -> list[str]:
        m = self.manifest
        builder = m["options"].get("builder", "optimum")
        lines = [
            f"{'reused' if self.reused else 'exported'} {m['source']} → {self.out_dir} "
            f"({m['options']['precision']}, {m['options']['device']}, {builder} graph, "
            f"{m['size_bytes'] / GB:.2f} GB on disk)",
        ]
        parity = m.get("parity")
        if parity:
            lines.append(Parity.from_dict(parity).summary())
        lines.append(f"use it: [providers.local] model_dir = {str(self.out_dir)!r}")
        return lines


def validate(options: ExportOptions) -> None:
    """Refuse impossible combinations before any work."""
    if options.dtype == "fp16" and options.device != "cuda":
        raise ModelExportError(
            "fp16 export needs --device cuda: optimum exports fp16 only on a GPU. "
            "On a CPU machine export fp32, optionally with --quantize int8 or int4"
        )
    if options.dtype == "fp16" and options.quantize != "none":
        raise ModelExportError("--quantize applies to fp32 exports; use --dtype fp32 with --quantize")
    if not 0.0 <= options.max_top1_changes <= 1.0:
        raise ModelExportError("--max-top1-changes is a share of positions: give a number from 0 to 1")
    if options.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ModelExportError(
                "--device cuda: PyTorch sees no CUDA GPU on this machine (CPU build of torch, or no GPU). "
                "Export with --device cpu --dtype fp32 here, or run the export on a GPU machine"
            )


def _fingerprint(source: str, revision: str, gguf_file: str | None = None) -> str:
    """A hash of the source: its files (content for small ones, size and mtime for weights);
    a GGUF file's whole content."""
    digest = hashlib.sha256()
    path = Path(source)
    if gguf.is_gguf(source, gguf_file):
        if gguf_file is not None and not path.is_dir():
            digest.update(f"hub:{source}@{revision}:{gguf_file}".encode())
        else:
            digest.update(f"gguf:{gguf.fingerprint(gguf.locate(source, gguf_file, revision))}".encode())
        return digest.hexdigest()
    if not path.is_dir():
        digest.update(f"hub:{source}@{revision}".encode())
        return digest.hexdigest()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}:{stat.st_size}".encode())
        if stat.st_size < 64 * 1024**2:
            digest.update(file.read_bytes())
        else:
            digest.update(str(stat.st_mtime_ns).encode())
    return digest.hexdigest()


def _key(options: ExportOptions, fingerprint: str) -> str:
    payload = {
        "pipeline": PIPELINE_VERSION,
        "source": fingerprint,
        "device": options.device,
        "dtype": options.dtype,
        "quantize": options.quantize,
        "builder": options.builder,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _reusable(options: ExportOptions, key: str) -> dict[str, Any] | None:
    path = options.out_dir / MANIFEST_FILE
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if manifest.get("key") != key:
        return None
    if not all((options.out_dir / f).is_file() for f in manifest.get("files", [])):
        return None
    return manifest


class _Progress:
    """One line per step with its time; a spinner while it runs (on stderr)."""

    def __init__(self, quiet: bool) -> None:
        self.console = Console(stderr=True, quiet=quiet)

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        start = time.perf_counter()
        with self.console.status(f"{title}…"):
            yield
        self.console.print(f"[green]✓[/] {title} ({time.perf_counter() - start:.1f} s)")


def _require_source(options: ExportOptions, load: dict[str, Any]) -> None:
    """Fail early, in one line, when the source has no readable model config."""
    from transformers import AutoConfig

    if gguf.is_gguf(options.source, options.gguf_file):
        return  # read (and refused in one line) by gguf.GgufInfo
    try:
        AutoConfig.from_pretrained(options.source, **load)
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelExportError(
            f"cannot read a model from {options.source!r} ({reason}); give a local directory with "
            "config.json and the weights (save_pretrained), a hub id this machine can reach, or a "
            "GGUF file (a path ending in .gguf, or --gguf-file NAME for a file of a hub repository)"
        ) from None


def _check_memory(options: ExportOptions, load: dict[str, Any], info: gguf.GgufInfo | None) -> None:
    params = info.parameters if info is not None else parameter_count(options.source, **load)
    need, step = needed_bytes(
        params,
        dtype=options.dtype,
        device=options.device,
        quantize=options.quantize,
        builder=options.builder,
        gguf=info is not None,
    )
    have = available_bytes()
    if have is not None and need > have:
        raise ModelExportError(
            f"exporting {options.source} ({params / 1e9:.2f} B parameters) needs about {need / GB:.1f} GB "
            f"of RAM at its peak ({step}), and only {have / GB:.1f} GB is available. Run it on a machine "
            "with more memory (a 3B model needs 30 GB or more) and copy the output directory here, "
            "or pass --no-memory-check to try anyway"
        )


def _clear_models(out_dir: Path) -> None:
    for old in out_dir.glob("model.onnx*"):
        old.unlink()
    (out_dir / MANIFEST_FILE).unlink(missing_ok=True)


def _save_companions(source: str, out_dir: Path, load: dict[str, Any]) -> None:
    """Tokenizer (with its chat template), config and generation config beside the model."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    AutoTokenizer.from_pretrained(source, **load).save_pretrained(out_dir)
    AutoConfig.from_pretrained(source, **load).save_pretrained(out_dir)
    # Without a generation_config.json the engine falls back to config.json's eos id.
    with contextlib.suppress(OSError):
        GenerationConfig.from_pretrained(source, **load).save_pretrained(out_dir)


def export(options: ExportOptions, *, quiet: bool = False) -> ExportResult:
    """Export ``options.source`` into ``options.out_dir`` (or reuse what is there)."""
    validate(options)
    load: dict[str, Any] = {} if Path(options.source).is_dir() else {"revision": options.revision}
    _require_source(options, load)
    key = _key(options, _fingerprint(options.source, options.revision, options.gguf_file))
    manifest = _reusable(options, key)
    if manifest is not None:
        return ExportResult(options.out_dir, True, manifest)
    info = None
    if gguf.is_gguf(options.source, options.gguf_file):
        info = gguf.GgufInfo.read(gguf.locate(options.source, options.gguf_file, options.revision))
    if options.check_memory:
        _check_memory(options, load, info)
    genai_python = None
    if options.builder == "genai":
        from .genai_builder import builder_python

        genai_python = builder_python(options.genai_python)
    progress = _Progress(quiet)
    out = options.out_dir
    out.mkdir(parents=True, exist_ok=True)
    _clear_models(out)
    checkpoint = out / GGUF_CHECKPOINT
    shutil.rmtree(checkpoint, ignore_errors=True)
    try:
        source = options.source
        if info is not None:
            with progress.step(f"dequantise {info.path.name} ({info.architecture}) to an fp32 checkpoint"):
                gguf.dequantize(info, checkpoint)
            source, load = str(checkpoint), {}
        _build(options, source, load, out, progress, genai_python)
        parity = None
        if options.parity:
            from .parity import check

            with progress.step("parity check against PyTorch"):
                parity = check(
                    source,
                    out,
                    options.precision,
                    options.device,
                    max_top1_changes=options.max_top1_changes,
                    **load,
                )
    finally:
        shutil.rmtree(checkpoint, ignore_errors=True)
    if parity is not None and not parity.ok:
        _clear_models(out)
        raise ModelExportError(
            f"export of {options.source} refused: {parity.failure()}; no model was written to {out}. "
            "Try another --quantize (int8 changes fewer tokens than int4), or check the source model"
        )
    files = sorted(str(p.relative_to(out)) for p in out.iterdir() if p.is_file() and p.name != MANIFEST_FILE)
    manifest = {
        "key": key,
        "source": options.source,
        "options": {**asdict(options), "out_dir": str(out), "precision": options.precision},
        "files": files,
        "size_bytes": sum((out / f).stat().st_size for f in files),
        "parity": parity.as_dict() if parity else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if info is not None:
        manifest["gguf"] = {
            "file": info.path.name,
            "architecture": info.architecture,
            "name": info.name,
            "eos_token_ids": info.eos_token_ids,
            "chat_template": bool(info.chat_template),
        }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    return ExportResult(out, False, manifest)


def _build(
    options: ExportOptions,
    source: str,
    load: dict[str, Any],
    out: Path,
    progress: _Progress,
    genai_python: str | None,
) -> None:
    """The graph (optimum, or the genai builder run by ``genai_python``), last-position
    logits, quantization and the tokenizer / config files, from ``source`` into ``out``."""
    from .graph import last_position_logits
    from .quantize import QUANTIZERS

    work = out / ".export-tmp"
    shutil.rmtree(work, ignore_errors=True)
    try:
        if genai_python is not None:
            from .genai_builder import build, builder_precision

            precision = builder_precision(options.dtype, options.quantize)
            with progress.step(
                f"onnxruntime-genai builder on {options.source} ({precision}, {options.device})"
            ):
                build(
                    source,
                    work,
                    python=genai_python,
                    precision=precision,
                    device=options.device,
                    revision=options.revision,
                )
            # The builder quantizes int4 itself; int8 is built at fp32 and quantized below.
            quantize = options.quantize if options.quantize in ("int8", "int8-block") else "none"
        else:
            with progress.step(f"optimum export of {options.source} ({options.dtype}, {options.device})"):
                _optimum_export(options, source, work)
            quantize = options.quantize
        with progress.step("LM head on the last position only"):
            last_position_logits(work / MODEL_FILE)
        if quantize == "none":
            for file in work.glob("model.onnx*"):
                file.rename(out / file.name)
        else:
            with progress.step(f"{quantize} quantization"):
                QUANTIZERS[quantize](work / MODEL_FILE, out / MODEL_FILE)
        with progress.step("tokenizer, chat template and generation config"):
            _save_companions(source, out, load)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _optimum_export(options: ExportOptions, source: str, work: Path) -> None:
    from optimum.exporters.onnx import main_export

    try:
        main_export(
            source,
            output=work,
            task="text-generation-with-past",
            device=options.device,
            dtype=options.dtype,
            revision=options.revision,
            do_validation=False,  # the parity check below replaces optimum's (silent) validation
        )
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelExportError(f"optimum could not export {options.source}: {exc}") from None
    if not (work / MODEL_FILE).is_file():
        raise ModelExportError(f"optimum wrote no {MODEL_FILE} for {options.source}; is it a causal LM?")


__all__ = ["ExportOptions", "ExportResult", "export", "validate"]
