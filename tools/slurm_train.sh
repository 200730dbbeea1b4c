#!/usr/bin/env bash
# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# Training on a Slurm cluster, one task per GPU.
# Usage: [GPUS=4] [GPUS_PER_NODE=4] [CPUS_PER_TASK=5] [SRUN_ARGS=""] \
#        [PYTHON=python] bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG \
#        [WORK_DIR] [train.py args]
set -x

if [ $# -lt 3 ]; then
    echo "Usage: $0 PARTITION JOB_NAME CONFIG [WORK_DIR] [train.py args]" >&2
    exit 2
fi

PARTITION=$1
JOB_NAME=$2
CONFIG=$3
GPUS=${GPUS:-4}
GPUS_PER_NODE=${GPUS_PER_NODE:-4}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PYTHON=${PYTHON:-python}
# An optional 4th argument that is not an option is the work dir.
if [ $# -ge 4 ] && [[ "$4" != -* ]]; then
    PY_ARGS=(--work-dir "$4" "${@:5}")
else
    PY_ARGS=("${@:4}")
fi

# shellcheck disable=SC2086  # SRUN_ARGS holds several words
PYTHONPATH="$(dirname "$0")/..${PYTHONPATH:+:${PYTHONPATH}}" \
srun -p "${PARTITION}" \
    --job-name="${JOB_NAME}" \
    --gres=gpu:"${GPUS_PER_NODE}" \
    --ntasks="${GPUS}" \
    --ntasks-per-node="${GPUS_PER_NODE}" \
    --cpus-per-task="${CPUS_PER_TASK}" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    "${PYTHON}" -u "$(dirname "$0")/train.py" "${CONFIG}" \
    --launcher="slurm" "${PY_ARGS[@]}"
