#!/usr/bin/env bash
# Install the headless browser the report's page tests drive: Debian's chromium and chromium-driver.
# Idempotent: does nothing when both are already on PATH. Needs root (CI and the dev machines are).
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ ${#missing[@]} -eq 0 ]; then
    echo "setup_browser: chromium and chromedriver already installed ($(chromium --version 2>/dev/null | head -n1))"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup_browser: apt-get not found; install ${missing[*]} by hand for the report's browser tests" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "setup_browser: not root and no sudo; install ${missing[*]} by hand" >&2
        exit 1
    fi
fi
echo "setup_browser: apt-get update"
$SUDO apt-get update -qq
echo "setup_browser: apt-get install ${missing[*]}"
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup_browser: installed $(chromium --version 2>/dev/null | head -n1)"
