#!/usr/bin/env bash
# The README's test command: set up (with test tools), then lint, type-check and test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
bash scripts/ci-apt.sh
bash scripts/ci-apt-deploy.sh
bash scripts/setup-genai.sh
export LEXRAG_GENAI_PYTHON="$PWD/.bench-venv/bin/python"
# Exported models (embedders, tiny test LLMs) are cached inside the clone, nowhere else.
export LEXRAG_CACHE_DIR="$PWD/.lexrag/cache"
exec .venv/bin/nox --no-venv -s tests
