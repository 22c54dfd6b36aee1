#!/usr/bin/env bash
# Runs the container's command. When LEXRAG_LOG_DIR is set (the llm-service sets /app/logs),
# its output also goes to $LEXRAG_LOG_DIR/lexrag.log, while `docker logs` keeps showing it.
set -euo pipefail
if [ -n "${LEXRAG_LOG_DIR:-}" ]; then
    if mkdir -p "$LEXRAG_LOG_DIR" 2>/dev/null && [ -w "$LEXRAG_LOG_DIR" ]; then
        exec > >(tee -a "$LEXRAG_LOG_DIR/lexrag.log") 2>&1
    else
        echo "lexrag-entrypoint: $LEXRAG_LOG_DIR is not writable by uid $(id -u); logging to stdout only" >&2
    fi
fi
exec "$@"
