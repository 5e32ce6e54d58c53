#!/usr/bin/env bash
# Install coevol with the embedded model and the dev tools, then lint, type-check and run every test
# (including one real run of the embedded model). Benchmarks are separate: python benchmarks/run.py
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

if [ ! -x .venv/bin/python ]; then
    step "creating the virtual environment in .venv"
    python3 -m venv .venv
fi
step "updating pip"
with_heartbeat .venv/bin/python -m pip install --quiet --upgrade pip
if .venv/bin/python -c 'import llama_cpp' 2>/dev/null; then
    step "installing coevol with the dev tools (llama.cpp is already compiled: under a minute)"
else
    step "installing coevol with the dev tools and compiling llama.cpp (about 6 minutes on 2 cores, once)"
fi
with_heartbeat .venv/bin/python -m pip install --quiet -e '.[local,dev]'
step "ruff check"
.venv/bin/ruff check src tests benchmarks
step "ruff format --check"
.venv/bin/ruff format --check src tests benchmarks
step "mypy (strict)"
.venv/bin/mypy
step "browser for the report's page tests (Debian's chromium and chromium-driver)"
bash scripts/setup_browser.sh
step "pytest (every test, including one real run of the embedded model: a few minutes)"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
