#!/usr/bin/env bash
# Usage: GPUS=8 tools/dist_test.sh CONFIG CHECKPOINT [GPUS] [test.py args...]
CONFIG=$1
CHECKPOINT=$2
# GPUS may be left out; the extra arguments start at $first
if [[ "${3:-}" =~ ^[0-9]+$ ]]; then
    GPUS=$3; first=4
else
    GPUS=${GPUS:-8}; first=3
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
    "$(dirname "$0")/test.py" \
    "$CONFIG" \
    "$CHECKPOINT" \
    --launcher pytorch "${@:first}"
