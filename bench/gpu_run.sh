#!/usr/bin/env bash
# Run on a lent GPU machine (the `device` tool's `run`, with `.whl` carried; fetch it first with
# bench/gpu_wheels.sh). Installs the carried wheels, then runs one of:
#     bash bench/gpu_run.sh realscale [realscale.py options]   # the full-size researcher's path
#     bash bench/gpu_run.sh cuda-check                         # CUDA against the CPU, data methods at ViT-B/32
# Logs and the table go to $OUT (the files that come back); the table is rewritten after every
# step, so a run stopped at the 10-minute limit still returns what it measured.
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "install the wheels first: bash bench/gpu_wheels.sh here, then carry .whl"; exit 2; }
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
OUT=${OUT:-$(mktemp -d)}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
what=${1:-realscale}
shift || true
case "$what" in
  realscale) python3 bench/realscale.py --zoo-dir /tmp/realscale-zoo --out "$OUT/realscale.md" "$@" 2>&1 | tee "$OUT/realscale.log" ;;
  cuda-check) python3 bench/cuda_check.py "$@" 2>&1 | tee "$OUT/cuda_check.log" ;;
  *) echo "usage: bash bench/gpu_run.sh realscale|cuda-check [options]"; exit 2 ;;
esac
