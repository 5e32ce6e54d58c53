#!/usr/bin/env bash
# Shared by scripts/demo.sh and scripts/test.sh: say what each long step is doing.

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

# install_coevol EXTRAS: the venv in .venv, then coevol in editable mode with those extras.
install_coevol() {
    local extras=$1
    if [ ! -x .venv/bin/python ]; then
        step "creating the virtual environment in .venv"
        python3 -m venv .venv
    fi
    step "updating pip"
    with_heartbeat .venv/bin/python -m pip install --quiet --upgrade pip
    if .venv/bin/python -c 'import llama_cpp' 2>/dev/null; then
        step "installing coevol[$extras] (llama.cpp is already compiled: about a minute)"
    else
        step "installing coevol[$extras] and compiling llama.cpp (about 6 minutes on 2 cores, once)"
    fi
    with_heartbeat .venv/bin/python -m pip install --quiet -e ".[$extras]"
}
