#!/usr/bin/env bash
# Install coevol with the embedded model and the dev tools, then lint, type-check and run every test
# (including one real run of the embedded model). Benchmarks are separate: python benchmarks/run.py
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

install_coevol local,dev
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
