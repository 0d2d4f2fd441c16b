#!/usr/bin/env bash
# The test command: makes sure the environment is set up (scripts/setup.sh, a no-op when done), then
# runs the whole test suite, the slow tier included (plain `pytest` runs only the fast tier). Extra
# arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The web demo's browser test drives Debian's chromium headless; install it when missing (skipped, with
# the reason, where it cannot be installed).
if ! command -v chromium >/dev/null 2>&1; then
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    printf '\033[1m[test]\033[0m installing chromium for the browser test\n'
    { $sudo_cmd apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends chromium; } >/dev/null 2>&1 \
        || echo "[test] chromium could not be installed; the browser test will be skipped"
fi
export ANNY_CACHE_DIR="${ANNY_CACHE_DIR:-$HOME/.cache/studio/anny}"
exec .venv/bin/python -m pytest -m "" "$@"
