#!/usr/bin/env bash
# Create the separate MONAI Label environment for monai_cnf (default: ./.venv-label).
#
# MONAI Label needs torchvision, which needs a matching torch: this env therefore holds torch 2.14.1 +
# torchvision 0.29.1 (pip takes both from the local wheel folders of this machine when present) and is kept apart
# from the main .venv (torch 2.13.0 CPU). MONAI Label 0.8.5 fails to start with pydicom 3
# ("No module named 'pydicom._storage_sopclass_uids'"), hence the pydicom/pynetdicom/dicomweb-client pins.
#
# Usage: bash scripts/monailabel_env.sh [VENV_DIR]        (idempotent: re-running only checks the env)
# Env:   PYTHON (default python3), MONAILABEL_VERSION (default 0.8.5)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${ROOT}/.venv-label}"
PYTHON="${PYTHON:-python3}"
MONAILABEL_VERSION="${MONAILABEL_VERSION:-0.8.5}"
PINS=("torch==2.14.1" "torchvision==0.29.1" "pydicom<3" "pynetdicom<3" "dicomweb-client<0.60")

start=$(date +%s)
if [ ! -x "${VENV}/bin/python" ]; then
    echo "[monailabel_env] creating ${VENV}"
    "${PYTHON}" -m venv "${VENV}"
    "${VENV}/bin/python" -m pip install --quiet --upgrade pip
fi
PIP=("${VENV}/bin/python" -m pip install --quiet)

if ! "${VENV}/bin/python" -c "import torch, torchvision; assert torch.__version__.startswith('2.14.1')" 2>/dev/null; then
    echo "[monailabel_env] installing torch + torchvision first (no CUDA download: local wheels when present)"
    "${PIP[@]}" "torch==2.14.1" "torchvision==0.29.1"
fi
if ! "${VENV}/bin/python" -c "import monailabel" 2>/dev/null; then
    echo "[monailabel_env] installing monailabel==${MONAILABEL_VERSION} with pins: ${PINS[*]}"
    "${PIP[@]}" "monailabel==${MONAILABEL_VERSION}" "${PINS[@]}"
fi
echo "[monailabel_env] installing monai_cnf (editable) into the label env"
"${PIP[@]}" -e "${ROOT}" "${PINS[@]}"

"${VENV}/bin/python" - <<'PY'
import importlib.metadata as md

import monai_cnf  # noqa: F401  (our package imports in this env)
import monailabel
import torch

print(f"[monailabel_env] ok: monailabel {monailabel.__version__}, monai {md.version('monai')}, torch {torch.__version__}")
PY
echo "[monailabel_env] done in $(( $(date +%s) - start )) s: ${VENV}/bin/monailabel"
