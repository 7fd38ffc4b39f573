#!/usr/bin/env bash
# torchrun with ufo-mm on the path: the shared part of dist_train.sh and dist_test.sh.
#   bash tools/dist_run.sh GPUS TOOL.py [tool arguments...]
# NNODES, NODE_RANK, MASTER_ADDR, PORT (torchrun's rendezvous) and PYTHON from the environment.
set -euo pipefail
GPUS=$1
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --master_port="$PORT" \
    --nproc_per_node="$GPUS" \
    "${@:2}"
