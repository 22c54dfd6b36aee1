#!/usr/bin/env bash
# Installs a Compose CLI from Debian's packages, so tests/test_deploy.py can validate
# docker-compose.yml with `config`. Idempotent; never fails the build: without it those
# tests skip and say why. (No Docker engine is installed or started: none is needed to
# validate, and the image build test runs only where a daemon already answers.)
set -uo pipefail

if docker compose version >/dev/null 2>&1 || docker-compose version >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "ci-apt-deploy: not root or no apt-get; the compose validation tests will skip" >&2
    exit 0
fi
# Debian 12 packages Compose v1 (1.29) as `docker-compose`, Debian 13 packages v2; either
# validates the file.
if ! apt-get update -qq >/dev/null 2>&1; then
    echo "ci-apt-deploy: apt-get update failed; the compose validation tests will skip" >&2
    exit 0
fi
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null 2>&1; then
    echo "ci-apt-deploy: apt-get install docker-compose failed; the compose validation tests will skip" >&2
fi
exit 0
