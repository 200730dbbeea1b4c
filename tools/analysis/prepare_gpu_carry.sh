#!/usr/bin/env bash
# Copyright (c) mmseg_u2pl contributors. All rights reserved.
#
# Download, on a machine with PyPI access, what tools/analysis/gpu_check.py
# installs on a GPU machine without network (Python 3.12 with torch,
# torchvision, numpy and opencv-python-headless, but no OpenMMLab packages):
#
#   DIR/wheels/*.whl     mmengine, mmsegmentation and the dependencies of
#                        the OpenMMLab packages that such a machine lacks, as
#                        wheels for CPython 3.12 on x86-64 Linux
#   DIR/mmcv-2.1.0.tar.gz  the mmcv source (PyPI has no wheel of it); it is
#                        built there against the machine's torch
#
# and check that DIR stays under the 64 MiB that one device call may carry.
# DIR is ignored by git: name it in the call's `carry` list.
#
# Usage: bash tools/analysis/prepare_gpu_carry.sh [DIR]   (default .gpu_carry)
# Env:   PYTHON=.venv/bin/python   a Python with pip, setuptools<81 and torch
#                                  (pip reads the mmcv source's metadata
#                                  with the installed setuptools)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DIR="${1:-$ROOT/.gpu_carry}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
LIMIT_MIB=64
MMCV_VERSION=2.1.0
# Pure-Python wheels, plus regex (a compiled cp312 wheel): what mmengine,
# mmsegmentation and mmseg_u2pl import that the GPU machine lacks
# (/work/.library/device/KINDS.md lists its packages). setuptools<81 keeps
# pkg_resources for mmcv's setup.py and mmengine's `mmseg::` configs.
WHEELS=(
    mmengine==0.10.7 mmsegmentation==1.2.2 addict==2.4.0 yapf==0.43.0
    platformdirs==4.14.9 termcolor==3.3.0 prettytable==3.19.0
    wcwidth==0.9.4 ftfy==6.3.1 regex==2026.11.19 setuptools==80.10.2
)

if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
    echo "[prepare_gpu_carry] ERROR: '$PYTHON' has no pip. Set PYTHON to the" \
        "project's environment (bash tools/setup_env.sh creates .venv)." >&2
    exit 1
fi
PIP=("$PYTHON" -m pip --disable-pip-version-check)
mkdir -p "$DIR/wheels"
rm -f "$DIR"/wheels/*.whl "$DIR"/mmcv-*.tar.gz

echo "[prepare_gpu_carry] wheels for CPython 3.12 -> $DIR/wheels"
"${PIP[@]}" download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DIR/wheels" "${WHEELS[@]}"

echo "[prepare_gpu_carry] mmcv $MMCV_VERSION source -> $DIR"
"${PIP[@]}" download -q --no-deps --no-binary=:all: --no-build-isolation \
    -d "$DIR" "mmcv==$MMCV_VERSION"

ls -l "$DIR" "$DIR/wheels"
BYTES="$(du -sb "$DIR" | cut -f1)"
MIB="$(awk -v b="$BYTES" 'BEGIN { printf "%.1f", b / 1048576 }')"
if (( BYTES >= LIMIT_MIB * 1048576 )); then
    echo "[prepare_gpu_carry] ERROR: $DIR holds $MIB MiB, over the" \
        "$LIMIT_MIB MiB one device call may carry; remove what the GPU" \
        "machine already has from WHEELS in $0." >&2
    exit 1
fi
echo "[prepare_gpu_carry] $DIR: $MIB MiB (limit $LIMIT_MIB MiB)"
