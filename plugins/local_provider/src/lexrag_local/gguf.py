"""GGUF sources for ``lexrag model export``.

A GGUF file (a local path, or a file of a hub repository) is read with transformers' GGUF
support (the ``gguf`` package dequantises it to fp32) and written as a Hugging Face
checkpoint directory; the normal export path (optimum, last-position logits, quantisation,
parity check) takes it from there.

What the model needs besides its weights comes from the file's metadata, never from a
Llama-3 assumption: the tokenizer and its pre-tokenizer, the chat template (ChatML for
SmolLM2, Llama-3's for the Frog), BOS / EOS / end-of-turn ids, whether a BOS is added, and
the context length. transformers 4.57 gets some of it wrong, which is corrected here:

- its Llama converter names the BOS token as the EOS token (SmolLM2: ``<|im_start|>``);
- it adds a BOS although the file says ``tokenizer.ggml.add_bos_token = false``;
- byte-level vocabularies get GPT-2's pre-tokenizer whatever ``tokenizer.ggml.pre`` says
  (Llama-3 splits digits in groups of three, SmolLM2 one by one).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lexrag import ModelExportError

SUFFIX = ".gguf"

#: Tokens that end a turn in common chat formats (as llama.cpp's end-of-generation list):
#: stopped on when the vocabulary has them, besides the metadata's eos / eot / eom ids.
END_OF_TURN_TOKENS = (
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end_of_text|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|end|>",
    "<end_of_turn>",
    "<|END_OF_TURN_TOKEN|>",
    "<EOT>",
)

#: Llama-3's pre-tokenizer split (its tokenizer.json; llama.cpp's ``llama-bpe``).
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
#: ``tokenizer.ggml.pre`` values whose split is Llama-3's; ``smollm`` splits digits one by one
#: before GPT-2's split; GPT-2's own is what transformers gives every byte-level vocabulary.
_LLAMA3_PRE = {"llama-bpe", "llama3", "llama-v3"}
_SMOLLM_PRE = {"smollm", "starcoder", "refact", "codeshell"}
_GPT2_PRE = {"default", "gpt-2", "gpt2"}


@dataclass
class GgufInfo:
    """What the export reads from a GGUF file's metadata."""

    path: Path
    architecture: str
    name: str | None = None
    context_length: int | None = None
    tokenizer_model: str | None = None
    pre: str | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    eot_token_id: int | None = None
    eom_token_id: int | None = None
    pad_token_id: int | None = None
    unk_token_id: int | None = None
    add_bos_token: bool | None = None
    add_eos_token: bool | None = None
    chat_template: str | None = None
    #: Weights in the file (elements of every tensor).
    parameters: int = 0
    #: Every id a generation stops on: eos, eot, eom, and END_OF_TURN_TOKENS in the vocabulary.
    eos_token_ids: list[int] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> GgufInfo:
        try:
            from gguf import GGUFReader
        except ModuleNotFoundError:
            raise ModelExportError(
                "exporting a GGUF file needs the 'gguf' package: `pip install gguf accelerate` "
                "(lexrag-local depends on both)"
            ) from None
        try:
            reader = GGUFReader(str(path))
        except (OSError, ValueError) as exc:
            raise ModelExportError(f"{path} is not a readable GGUF file: {exc}") from None
        fields = reader.fields

        def value(key: str) -> Any:
            item = fields.get(key)
            return None if item is None else item.contents()

        arch = value("general.architecture")
        if not arch:
            raise ModelExportError(f"{path} has no general.architecture: not a model GGUF file")
        tokens_field = fields.get("tokenizer.ggml.tokens")
        if tokens_field is None:
            raise ModelExportError(f"{path} has no tokenizer (tokenizer.ggml.tokens): cannot export it")
        info = cls(
            path=path,
            architecture=str(arch),
            name=value("general.name"),
            context_length=value(f"{arch}.context_length"),
            tokenizer_model=value("tokenizer.ggml.model"),
            pre=value("tokenizer.ggml.pre"),
            bos_token_id=value("tokenizer.ggml.bos_token_id"),
            eos_token_id=value("tokenizer.ggml.eos_token_id"),
            eot_token_id=value("tokenizer.ggml.eot_token_id"),
            eom_token_id=value("tokenizer.ggml.eom_token_id"),
            pad_token_id=value("tokenizer.ggml.padding_token_id"),
            unk_token_id=value("tokenizer.ggml.unknown_token_id"),
            add_bos_token=value("tokenizer.ggml.add_bos_token"),
            add_eos_token=value("tokenizer.ggml.add_eos_token"),
            chat_template=value("tokenizer.chat_template"),
            parameters=sum(int(t.n_elements) for t in reader.tensors),
        )
        tokens: list[str] = tokens_field.contents()
        ids = [info.eos_token_id, info.eot_token_id, info.eom_token_id]
        ids += [i for i, text in enumerate(tokens) if text in END_OF_TURN_TOKENS]
        info.eos_token_ids = sorted({int(i) for i in ids if i is not None and 0 <= i < len(tokens)})
        if not info.eos_token_ids:
            raise ModelExportError(
                f"{path} names no end-of-sequence token (tokenizer.ggml.eos_token_id): "
                "generation could never stop"
            )
        return info


def is_gguf(source: str, gguf_file: str | None) -> bool:
    return gguf_file is not None or source.lower().endswith(SUFFIX)


def locate(source: str, gguf_file: str | None, revision: str) -> Path:
    """The local GGUF file: ``source`` itself, ``source/gguf_file``, or ``gguf_file`` of the
    hub repository ``source`` (downloaded into the Hugging Face cache)."""
    path = Path(source).expanduser()
    if gguf_file is None:
        if not path.is_file():
            raise ModelExportError(f"{source}: no such GGUF file")
        return path.resolve()
    if path.is_dir():
        found = path / gguf_file
        if not found.is_file():
            raise ModelExportError(f"{found}: no such GGUF file in {source}")
        return found.resolve()
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(source, gguf_file, revision=revision))
    except Exception as exc:  # hub errors: offline, no such repo or file, gated, …
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelExportError(
            f"cannot get {gguf_file!r} from the hub repository {source!r} ({reason}); "
            "download the file and give its path instead"
        ) from None


def fingerprint(path: Path) -> str:
    """The file's content hash (the export is keyed by it, so a re-run reuses the export)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(16 * 1024**2):
            digest.update(chunk)
    return digest.hexdigest()


def fix_tokenizer(tokenizer: Any, info: GgufInfo) -> None:
    """Special tokens, BOS/EOS adding, pre-tokenizer and decoder as the file's metadata says."""
    from tokenizers import Regex, decoders, pre_tokenizers

    def token(i: int | None) -> str | None:
        return None if i is None else tokenizer.convert_ids_to_tokens(int(i))

    for attr, token_id in (
        ("bos_token", info.bos_token_id),
        ("eos_token", info.eos_token_id if info.eos_token_id is not None else info.eos_token_ids[0]),
        ("unk_token", info.unk_token_id),
        ("pad_token", info.pad_token_id),
    ):
        text = token(token_id)
        if text is not None:
            setattr(tokenizer, attr, text)
    # Llama's fast tokenizer rebuilds its post-processor when these are set.
    for attr, flag in (("add_bos_token", info.add_bos_token), ("add_eos_token", info.add_eos_token)):
        if flag is not None and hasattr(tokenizer, attr):
            setattr(tokenizer, attr, bool(flag))
    if info.chat_template and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = info.chat_template
    # The engine streams with the backend's decoder and cleans up no spaces; so does llama.cpp.
    tokenizer.clean_up_tokenization_spaces = False
    if info.tokenizer_model != "gpt2":
        return
    backend = tokenizer.backend_tokenizer
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if info.pre in _LLAMA3_PRE:
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
            ]
        )
    elif info.pre in _SMOLLM_PRE:
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    elif info.pre not in _GPT2_PRE and info.pre is not None:
        import warnings

        warnings.warn(
            f"{info.path.name}: pre-tokenizer {info.pre!r} is not known to lexrag; GPT-2's split is "
            "used (as transformers does), which may tokenize numbers and punctuation differently",
            stacklevel=2,
        )
    backend.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)


def dequantize(info: GgufInfo, out_dir: Path) -> None:
    """Write ``info.path`` as a Hugging Face checkpoint in ``out_dir`` (fp32 safetensors,
    config, tokenizer with its chat template, generation config with every stop id)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    folder, name = str(info.path.parent), info.path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (OSError, ValueError, KeyError, NotImplementedError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelExportError(
            f"transformers cannot load {info.path.name} ({info.architecture}): {reason}"
        ) from None
    fix_tokenizer(tokenizer, info)
    eos: int | list[int] = info.eos_token_ids if len(info.eos_token_ids) > 1 else info.eos_token_ids[0]
    config = model.config
    config.eos_token_id = eos
    config.bos_token_id = info.bos_token_id
    if info.pad_token_id is not None:
        config.pad_token_id = info.pad_token_id
    if info.context_length:
        config.max_position_embeddings = int(info.context_length)
    # A GGUF file carries no sampling defaults: the generation config has only the token ids,
    # so the model decodes greedily unless a request or [providers.local] asks otherwise.
    model.generation_config = GenerationConfig(
        bos_token_id=info.bos_token_id, eos_token_id=eos, pad_token_id=info.pad_token_id
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


__all__ = [
    "END_OF_TURN_TOKENS",
    "SUFFIX",
    "GgufInfo",
    "dequantize",
    "fingerprint",
    "fix_tokenizer",
    "is_gguf",
    "locate",
]
