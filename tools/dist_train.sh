#!/usr/bin/env bash
# Distributed training with torchrun, one process per GPU.
#   bash tools/dist_train.sh CONFIG GPUS [train.py options...]
# Several nodes: run it on every node with the same MASTER_ADDR/PORT and
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash tools/dist_train.sh CONFIG 8   # node 0
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 bash tools/dist_train.sh CONFIG 8   # node 1
# CPU-only (gloo) smoke run: add --cfg-options env_cfg.dist_cfg.backend=gloo
set -euo pipefail
if [ "$#" -lt 2 ]; then
  echo "usage: $0 CONFIG GPUS [tools/train.py options...]" >&2
  exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec bash "$ROOT/tools/dist_run.sh" "$2" "$ROOT/tools/train.py" "$1" --launcher pytorch "${@:3}"
