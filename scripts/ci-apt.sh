#!/usr/bin/env bash
# Debian packages the tests drive for real: tmux (the REPL test) and Chromium (the web page test).
# Idempotent; when apt cannot install them the tests that need them skip and say why.
set -u
need=()
command -v tmux >/dev/null || need+=(tmux)
command -v chromium >/dev/null || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "ci-apt: cannot install ${need[*]} (needs root and apt-get); their tests will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || echo "ci-apt: apt-get update failed" >&2
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
    || echo "ci-apt: installing ${need[*]} failed; their tests will skip" >&2
exit 0
