#!/usr/bin/env bash
# Copyright (c) mmseg_u2pl contributors. All rights reserved.
#
# One-command environment: creates ./.venv with the pinned versions of
# requirements.txt (torch 2.14.1 and torchvision 0.29.1: a build whose
# torchvision works beside it, so mmpretrain's models import), builds mmcv
# 2.1.0 with its compiled ops (cached outside the repository, per torch
# version, so the next setup on the same machine takes seconds), installs
# this package in editable mode and checks that everything imports.
#
# Usage: bash tools/setup_env.sh            (idempotent; seconds when ready)
# Env:   PYTHON=python3.11   interpreter used to create the venv
#        VENV=.venv          where the environment lives
#        MMSEG_U2PL_CACHE=~/.cache/mmseg_u2pl   where the mmcv wheel is cached
#        MAX_JOBS=<nproc>    parallel compile jobs for mmcv
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
VENV="${VENV:-$ROOT/.venv}"
CACHE="${MMSEG_U2PL_CACHE:-$HOME/.cache/mmseg_u2pl}"
MMCV_VERSION=2.1.0
STAMP="$VENV/.mmseg_u2pl_setup"
FINGERPRINT="$(cat requirements.txt setup.py tools/setup_env.sh | sha256sum | cut -d' ' -f1)"

log() { echo "[setup_env] $*"; }

check_env() {
    "$VENV/bin/python" - <<'EOF' >/dev/null 2>&1
import mmcv, mmcv.ops, mmengine, mmseg, mmseg_u2pl  # noqa
import mmpretrain.models  # noqa: needs a torchvision that matches torch
assert mmcv.__version__ == '2.1.0'
EOF
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$FINGERPRINT" ]] && check_env; then
    log "environment ready: $VENV (nothing to do)"
    exit 0
fi

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "[setup_env] ERROR: '$PYTHON' not found. Install Python 3.11 or set PYTHON=/path/to/python3.11." >&2
    exit 1
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

log "installing pinned requirements (torch, torchvision, mmengine, mmsegmentation, ...)"
# torch and torchvision first, at the versions requirements.txt pins: with
# them in place, nothing below can pull another torch.
TORCH_PINS=($(grep -E '^(torch|torchvision)==' requirements.txt))
"${PIP[@]}" install -q "${TORCH_PINS[@]}" "setuptools<81" wheel ninja psutil
"${PIP[@]}" install -q -r requirements.txt

TORCH_TAG="$("$VENV/bin/python" -c 'import torch; print(torch.__version__.replace("+", "_"))')"
WHEEL_DIR="$CACHE/wheels/torch-$TORCH_TAG"
mkdir -p "$WHEEL_DIR"
WHEEL="$(ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1 || true)"
if [[ -z "$WHEEL" ]]; then
    log "building mmcv $MMCV_VERSION with compiled ops (about 10-20 minutes on 2 cores; cached in $WHEEL_DIR)"
    BUILD_TMP="$(mktemp -d)"
    # --no-build-isolation: build against the installed torch (an isolated
    # build silently produces a wheel without ops). --no-cache-dir: pip's own
    # wheel cache would hand back an mmcv built against another torch.
    # setuptools<81 keeps pkg_resources, which mmcv's setup.py imports.
    "${PIP[@]}" download -q --no-cache-dir --no-deps --no-binary :all: --no-build-isolation \
        -d "$BUILD_TMP" "mmcv==$MMCV_VERSION"
    tar -xzf "$BUILD_TMP/mmcv-$MMCV_VERSION.tar.gz" -C "$BUILD_TMP"
    # torch >= 2.14's headers need C++20; mmcv 2.1.0 asks for C++17
    "$VENV/bin/python" tools/patch_mmcv_source.py "$BUILD_TMP/mmcv-$MMCV_VERSION/setup.py"
    (cd "$BUILD_TMP" && MMCV_WITH_OPS=1 FORCE_CUDA="${FORCE_CUDA:-0}" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
        "${PIP[@]}" wheel --no-cache-dir --no-build-isolation --no-deps -w "$BUILD_TMP/out" \
        "$BUILD_TMP/mmcv-$MMCV_VERSION")
    cp "$BUILD_TMP"/out/mmcv-*.whl "$WHEEL_DIR"/
    rm -rf "$BUILD_TMP"
    WHEEL="$(ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl | head -n 1)"
fi
log "installing $WHEEL"
"${PIP[@]}" install -q --no-deps --force-reinstall "$WHEEL"

log "installing mmseg_u2pl (editable)"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e .

if ! check_env; then
    echo "[setup_env] ERROR: the environment does not import; details:" >&2
    "$VENV/bin/python" -c "import mmcv.ops, mmseg, mmseg_u2pl, mmpretrain.models" >&2 || true
    exit 1
fi
echo "$FINGERPRINT" > "$STAMP"
log "environment ready: $VENV"
