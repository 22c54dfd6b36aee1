"""The CLI's start-up stays light: loading every installed plugin (what each ``lexrag`` command
does first, ``lexrag plugins`` included) imports none of the heavy libraries the plugins use
later (inference runtimes, database drivers, index libraries, document parsers, the server)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = (
    "torch",
    "transformers",
    "sentence_transformers",
    "onnxruntime",
    "onnxruntime_genai",
    "tokenizers",
    "huggingface_hub",
    "psycopg",
    "psycopg_pool",
    "pgserver",
    "bm25s",
    "hnswlib",
    "scipy",
    "pypdfium2",
    "docx",
    "fastapi",
    "uvicorn",
    "openai",
)

PROBE = """
import json, sys
import lexrag.cli
from lexrag.plugins import describe_plugins, make_plugin_manager
from lexrag.registry import Registry

pm = make_plugin_manager()
registry = Registry(pm)
described = describe_plugins(pm, registry)
print(json.dumps({
    "plugins": sorted(p["name"] for p in described),
    "heavy": sorted(m for m in HEAVY if m in sys.modules),
}))
"""


def test_loading_every_plugin_imports_no_heavy_library() -> None:
    code = f"HEAVY = {HEAVY!r}\n{PROBE}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    # The probe really loaded the plugins (else an empty list would prove nothing).
    assert {"retrievers", "postgres"} <= set(found["plugins"]), found
    assert found["heavy"] == [], f"imported at start-up: {found['heavy']}"


LAZY_PROBE = """
import json, sys
import lexrag
before = sorted(m for m in sys.modules if m.startswith(("lexrag.", "pydantic", "numpy", "pluggy")))
chunk = lexrag.Chunk
after = sorted(m for m in sys.modules if m.startswith(("lexrag.", "pydantic", "numpy")))
print(json.dumps({"before": before, "after": after, "chunk": chunk.__module__,
                  "missing": [n for n in lexrag.__all__ if not hasattr(lexrag, n)]}))
"""


def test_import_lexrag_loads_an_export_on_first_use() -> None:
    """``import lexrag`` loads the error hierarchy only (no pydantic, numpy or pluggy); a name of
    ``lexrag.__all__`` imports its module when first taken, and every name can be taken."""
    result = subprocess.run([sys.executable, "-c", LAZY_PROBE], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["before"] == ["lexrag.errors", "lexrag.redact"], found["before"]
    assert found["chunk"] == "lexrag.retrieval"
    assert {"lexrag.retrieval", "lexrag.types", "pydantic", "numpy"} <= set(found["after"])
    assert found["missing"] == []
