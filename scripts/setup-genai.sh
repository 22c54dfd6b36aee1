#!/usr/bin/env bash
# A separate interpreter with onnxruntime-genai 0.12.2, for `lexrag model export --builder genai`
# (its model builder) and the benchmark's genai-runtime rows. It brings the CPU onnxruntime, which
# must never sit beside onnxruntime-gpu in .venv, so it lives in .bench-venv; torch and transformers
# come from .venv through a .pth file. Never fails: without it the genai tests skip and say why.
set -u
cd "$(dirname "$0")/.."
if .bench-venv/bin/python -c "import onnxruntime_genai" >/dev/null 2>&1; then
    exit 0
fi
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if ! { "$PYTHON" -m venv .bench-venv \
        && .bench-venv/bin/python -m pip install --quiet --disable-pip-version-check onnxruntime-genai==0.12.2; }; then
    echo "setup-genai: could not install onnxruntime-genai 0.12.2; the genai tests will skip" >&2
    exit 0
fi
site=$(.bench-venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$PWD/.venv/lib/python3.11/site-packages" > "$site/zz_lexrag_venv.pth"
