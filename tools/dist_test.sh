#!/usr/bin/env bash
# Distributed evaluation with torchrun, one process per GPU.
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py options...]
# NNODES, NODE_RANK, MASTER_ADDR and PORT as in tools/dist_train.sh.
set -euo pipefail
if [ "$#" -lt 3 ]; then
  echo "usage: $0 CONFIG CHECKPOINT GPUS [tools/test.py options...]" >&2
  exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec bash "$ROOT/tools/dist_run.sh" "$3" "$ROOT/tools/test.py" "$1" "$2" --launcher pytorch "${@:4}"
