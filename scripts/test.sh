#!/usr/bin/env bash
# The README's test command: set up (with test tools), then lint, type-check and test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
exec .venv/bin/nox --no-venv -s tests
