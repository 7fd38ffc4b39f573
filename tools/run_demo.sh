#!/usr/bin/env bash
# The main job in one command on a new machine: sets the environment up if
# missing, then runs tools/demo.py (arguments are passed on; see --help).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
VENV="${UFO_MM_VENV:-$ROOT/.venv}"
exec "$VENV/bin/python" tools/demo.py "$@"
