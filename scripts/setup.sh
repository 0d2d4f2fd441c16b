#!/usr/bin/env bash
# Installs everything studio needs on a fresh Debian/Ubuntu machine. Safe to re-run: each step is
# skipped when already done.
#   1. Debian packages for headless rendering (EGL + Mesa's llvmpipe), when missing
#   2. a virtual environment in .venv with the pinned dependencies (torch's CPU wheel first)
#   3. the Anny body model's ~790 MB cache, built once into $ANNY_CACHE_DIR (~/.cache/studio/anny)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# 1. Debian packages
missing=()
for pkg in libegl1 libegl-mesa0 libgl1-mesa-dri libgles2; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# 2. Python environment
python_bin="${PYTHON:-}"
if [ -z "$python_bin" ]; then
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
            python_bin="$candidate"; break
        fi
    done
fi
[ -n "$python_bin" ] || { echo "studio needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $python_bin"
    "$python_bin" -m venv .venv
fi
stamp=.venv/.studio-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    say "installing Python packages (a few minutes the first time)"
    .venv/bin/python -m pip install -q --upgrade pip
    # torch first, pinned, so that no other package pulls a multi-GB CUDA build on a CPU machine.
    .venv/bin/python -m pip install -q torch==2.13.0
    .venv/bin/python -m pip install -q -e '.[test]'
    echo "$want" > "$stamp"
fi

# 3. Anny cache
export ANNY_CACHE_DIR="${ANNY_CACHE_DIR:-$HOME/.cache/studio/anny}"
if ! .venv/bin/python -c "import sys; from studio.body.anny_body import anny_cache_ready; sys.exit(not anny_cache_ready())"; then
    say "building the Anny body-model cache in $ANNY_CACHE_DIR (once, about 1-2 minutes)"
    .venv/bin/python -c "from studio.body import load_body_model; load_body_model('anny')"
fi
say "ready: .venv/bin/studio"
