#!/usr/bin/env bash
# The README's main job: set up, ingest the sample corpus, answer one question with citations.
# Who answers: the config's provider when a lexrag.toml (or LEXRAG_CONFIG / LLM_PROVIDER) says so,
# e.g. the local Frog model once exported; else OpenAI when OPENAI_API_KEY is set; else the
# built-in extractive provider. The extractive provider is the fallback, and the output's last
# line says who answered.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
corpus=${LEXRAG_DEMO_CORPUS:-../shared/data/vn-legal/docs}
question=${1:-"Thời gian thử việc đối với người quản lý doanh nghiệp tối đa là bao lâu?"}
provider=()
if [ -z "${LLM_PROVIDER:-}" ] && [ -z "${LEXRAG_CONFIG:-}" ] && [ ! -f lexrag.toml ] && [ -n "${OPENAI_API_KEY:-}" ]; then
    provider=(--provider openai)
fi
.venv/bin/lexrag ingest "$corpus"
exec .venv/bin/lexrag ask "$question" "${provider[@]}" --fallback extractive
