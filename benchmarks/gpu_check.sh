#!/usr/bin/env bash
# GPU check (issue 11): the flow contract on CUDA, then training throughput and peak memory of the paper-preset DRIVE
# CNF (1024x1024, batch 2) and SR CNF (64x64 HR, batch 64), each in fp32 and with AMP, as one table.
# Budget: <= 10 minutes on one GPU (timeout below). Usage: bash benchmarks/gpu_check.sh [extra gpu_check.py args]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export MLFLOW_DISABLE_TELEMETRY=true
timeout 590 "$PY" benchmarks/gpu_check.py --device cuda "$@"
