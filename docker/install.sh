#!/usr/bin/env bash
# Installs lexrag into the virtual environment on PATH the way scripts/setup.sh does, but not
# editable: `install.sh torch [INDEX_URL]` installs torch alone from INDEX_URL (default: the CPU
# build), `install.sh lexrag DIR...` installs the given distributions under the constraints.
set -euo pipefail
cd "$(dirname "$0")/.."
pip=(python -m pip install --disable-pip-version-check --no-input)
case "${1:-}" in
    torch)
        # torch first and from its own index: any other order lets the resolver pull a
        # multi-GB CUDA build from PyPI.
        "${pip[@]}" --index-url "${2:-https://download.pytorch.org/whl/cpu}" -r requirements/torch.txt
        ;;
    lexrag)
        shift
        [ "$#" -gt 0 ] || { echo "install.sh lexrag: name the distributions to install" >&2; exit 2; }
        "${pip[@]}" -c requirements/constraints.txt "$@"
        python -m pip check
        ;;
    *)
        echo "usage: install.sh torch [INDEX_URL] | install.sh lexrag DIR..." >&2
        exit 2
        ;;
esac
