"""What an exported model directory holds beside the ONNX graph: config, generation
defaults, tokenizer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lexrag import ModelExportError

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "lexrag-export.json"


@dataclass
class GenerationDefaults:
    """The model card's sampling defaults and stop ids (``generation_config.json``).

    As in transformers, a model samples only when its generation config says
    ``do_sample: true``; a model without one (every GGUF export) decodes greedily unless the
    request or ``[providers.local]`` sets a temperature."""

    eos_token_ids: list[int] = field(default_factory=list)
    bos_token_id: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    #: Built directly (HTTP mode's Frog card defaults) it samples; read from a model
    #: directory, only when the file says so.
    do_sample: bool = True

    @classmethod
    def read(cls, model_dir: Path, config: dict[str, Any]) -> GenerationDefaults:
        path = model_dir / "generation_config.json"
        data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
        eos = data.get("eos_token_id", config.get("eos_token_id"))
        eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        top_k = data.get("top_k", 0)
        return cls(
            eos_token_ids=[int(e) for e in eos_ids],
            bos_token_id=data.get("bos_token_id", config.get("bos_token_id")),
            temperature=float(data.get("temperature", 1.0)),
            top_p=float(data.get("top_p", 1.0)),
            # transformers' default top_k=50 applies only when sampling was asked for in the file.
            top_k=int(top_k) if "top_k" in data else 0,
            # transformers' default: no do_sample in the file (or no file) is greedy decoding.
            do_sample=bool(data.get("do_sample", False)),
        )


@dataclass
class ModelShape:
    """What the decode loop needs from ``config.json``."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    context_window: int

    @classmethod
    def of(cls, config: dict[str, Any]) -> ModelShape:
        heads = config["num_attention_heads"]
        return cls(
            num_layers=config["num_hidden_layers"],
            num_kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or config["hidden_size"] // heads,
            vocab_size=config["vocab_size"],
            context_window=config.get("max_position_embeddings", 2048),
        )


def read_json(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelExportError(
            f"{path} is missing: is {path.parent} a directory written by `lexrag model export`?"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelExportError(f"{path}: cannot read: {exc}; re-run `lexrag model export`") from None
    return data


def check_model_dir(model_dir: Path, model_file: str = MODEL_FILE) -> Path:
    """``model_dir``'s ONNX file, or a clear error saying how to make it."""
    onnx_path = model_dir / model_file
    if not onnx_path.is_file():
        raise ModelExportError(
            f"{onnx_path} not found: export a model first, e.g. "
            f"`lexrag model export phamhai/Llama-3.2-3B-Instruct-Frog {model_dir} --quantize int8`, "
            "and point [providers.local] model_dir at it"
        )
    return onnx_path


def load_tokenizer(model_dir: Path) -> Any:
    """The tokenizer saved beside the model (``transformers`` is imported here, not at startup)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as exc:
        raise ModelExportError(
            f"cannot load the tokenizer from {model_dir}: {exc}; re-run `lexrag model export`"
        ) from None


__all__ = [
    "MANIFEST_FILE",
    "MODEL_FILE",
    "GenerationDefaults",
    "ModelShape",
    "check_model_dir",
    "load_tokenizer",
    "read_json",
]
