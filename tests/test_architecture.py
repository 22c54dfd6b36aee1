"""The shape DESIGN.md promises: a core whose modules import one way (no cycles, type-only
imports included), plugins that import only the public API (``lexrag``) and no other plugin."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import lexrag

ROOT = Path(__file__).resolve().parents[1]

CORE = ROOT / "core" / "src"
PLUGIN_SOURCES = [*sorted((ROOT / "plugins").glob("*/src/*")), ROOT / "tests" / "plugins"]
PLUGIN_PACKAGES = {p.name for p in (ROOT / "plugins").glob("*/src/*") if p.is_dir()}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, root: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import in the file, wherever it
    stands: top level, inside functions, under ``if TYPE_CHECKING``."""
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, [alias.name for alias in node.names], node.lineno))
    return out


def core_graph() -> dict[str, set[str]]:
    """Core module → the core modules it imports (``from . import x`` counts as importing
    the submodule ``x`` where one exists)."""
    files = {_module_name(p, CORE): p for p in (CORE / "lexrag").rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for target, names, _ in _imports(path, CORE):
            if not target.startswith("lexrag"):
                continue
            subs = {f"{target}.{n}" for n in names if f"{target}.{n}" in files}
            graph[name] |= subs or ({target} if target in files else set())
            if subs and len(subs) < len(names) and target in files:
                graph[name].add(target)  # names other than submodules come from the package
            graph[name].discard(name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_core_has_no_import_cycle() -> None:
    assert _cycles(core_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: a loop through three modules is found."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("lexrag.redact", set()),
        ("lexrag.types", set()),
        ("lexrag.errors", {"lexrag.redact"}),
        ("lexrag.providers", {"lexrag.types", "lexrag.errors"}),
        ("lexrag.retrieval", {"lexrag.types", "lexrag.errors"}),
        ("lexrag.prompt", {"lexrag.types"}),
        ("lexrag.config", {"lexrag.errors", "lexrag.prompt", "lexrag.redact"}),
    ],
)
def test_the_lower_modules_import_only_what_is_below_them(module: str, allowed: set[str]) -> None:
    """redact → types/errors → contracts → prompt → config: config knows nothing of plugins,
    the contracts nothing of config."""
    assert core_graph()[module] <= allowed


def test_plugins_import_only_the_public_api() -> None:
    """Every plugin (the three in-tree distributions and the example under tests/plugins)
    imports lexrag's top-level module only, names it exports, and no other plugin."""
    exported = set(lexrag.__all__)
    offences = []
    for source in PLUGIN_SOURCES:
        own = source.name
        for path in sorted(source.rglob("*.py")):
            for target, names, line in _imports(path, source.parent):
                where = f"{path.relative_to(ROOT)}:{line}"
                top = target.split(".")[0]
                if top == "lexrag" and target != "lexrag":
                    offences.append(f"{where} imports {target} (import from lexrag instead)")
                elif target == "lexrag" and set(names) - exported:
                    offences.append(f"{where} imports {sorted(set(names) - exported)}, not in lexrag.__all__")
                elif top in PLUGIN_PACKAGES and top != own:
                    offences.append(f"{where} imports another plugin, {target}")
    assert offences == []


def test_the_plugin_api_exports_what_it_names() -> None:
    for name in lexrag.__all__:
        assert hasattr(lexrag, name), name
    # What every provider needs is there, not only in submodules.
    needed = {"Provider", "ProviderRequest", "ProviderError", "ChatCompletion", "ChunkFactory", "Usage"}
    assert needed <= set(lexrag.__all__)
    assert {"ChatMessage", "Source", "Embedder", "Retriever", "hookimpl", "estimate_tokens"} <= set(
        lexrag.__all__
    )


def test_every_exception_lives_in_errors() -> None:
    """One hierarchy, in one module: no core module defines an exception class of its own."""
    defined = []
    for path in sorted((CORE / "lexrag").rglob("*.py")):
        if path.name == "errors.py" and path.parent.name == "lexrag":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Name) and (b.id.endswith("Error") or b.id == "Exception")
                for b in node.bases
            ):
                defined.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert defined == []
