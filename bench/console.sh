#!/usr/bin/env bash
# How soon the ops console is usable on `microshop run` (see bench/console.py).
#   bench/console.sh [--rounds N]
set -euo pipefail
cd "$(dirname "$0")/.."
# Chromium and python3-websocket come with the test set
command -v chromium >/dev/null && /usr/bin/python3 -c "import websocket" 2>/dev/null ||
    bash scripts/bootstrap.sh test
[ -x build/microshop ] || cmake --build build -j "$(nproc)" >/dev/null
export MS_BINARY=${MS_BINARY:-$PWD/build/microshop}
exec /usr/bin/python3 bench/console.py "$@"
