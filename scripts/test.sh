#!/usr/bin/env bash
# The test command: makes sure the environment is set up (scripts/setup.sh, a no-op when done), then
# runs the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export ANNY_CACHE_DIR="${ANNY_CACHE_DIR:-$HOME/.cache/studio/anny}"
exec .venv/bin/python -m pytest "$@"
