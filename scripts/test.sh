#!/usr/bin/env bash
# Install coevol with the embedded model and the dev tools, then lint, type-check and run every test
# (including one real run of the embedded model). Benchmarks are separate: python benchmarks/run.py
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '==> %s\n' "$*" >&2; }

# Run "$@" and print a line every 30 s meanwhile, so a long quiet step is not taken for a hang.
with_heartbeat() {
    local start beat rc=0
    start=$(date +%s)
    (
        nap=
        trap 'kill "$nap" 2>/dev/null; exit 0' TERM
        while :; do
            sleep 30 & nap=$!
            wait "$nap"
            t=$(( $(date +%s) - start ))
            printf '    ... still working (%dm%02ds)\n' $(( t / 60 )) $(( t % 60 )) >&2
        done
    ) &
    beat=$!
    "$@" || rc=$?
    kill "$beat" 2>/dev/null || true
    wait "$beat" 2>/dev/null || true
    return "$rc"
}

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
step "pytest (every test, including one real run of the embedded model: a few minutes)"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
