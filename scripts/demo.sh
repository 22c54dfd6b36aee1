#!/usr/bin/env bash
# The README's main job: set up, ingest the sample corpus, answer one question with citations.
# It answers with the local model if one is exported and configured, OpenAI if OPENAI_API_KEY is
# set, and the built-in extractive provider otherwise; the output says which one answered.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
corpus=${LEXRAG_DEMO_CORPUS:-../shared/data/vn-legal/docs}
question=${1:-"Thời gian thử việc đối với người quản lý doanh nghiệp tối đa là bao lâu?"}
.venv/bin/lexrag ingest "$corpus"
exec .venv/bin/lexrag ask "$question"
