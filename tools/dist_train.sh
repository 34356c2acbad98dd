#!/usr/bin/env bash
# Usage: GPUS=8 tools/dist_train.sh CONFIG [GPUS] [train.py args...]
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR and PORT as in mmdet.
CONFIG=$1
# GPUS may be left out; the extra arguments start at $first
if [[ "${2:-}" =~ ^[0-9]+$ ]]; then
    GPUS=$2; first=3
else
    GPUS=${GPUS:-8}; first=2
fi
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}

PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
"${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$(dirname "$0")/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:first}"
