#!/usr/bin/env bash
# Create ./.venv and install lexrag with its three plugins (and, with --dev, the test tools).
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
"${pip[@]}" -c requirements/constraints.txt \
    -e core -e plugins/openai_provider -e plugins/local_provider -e plugins/retrievers "${extra[@]}"
echo "$want" > "$stamp"
