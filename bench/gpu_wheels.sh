#!/usr/bin/env bash
# Fetch, into .whl/ (git-ignored), the wheels a lent GPU machine lacks for bench/gpu_run.sh.
# That machine has torch, torchvision, transformers, timm, safetensors and huggingface_hub, but
# not open_clip (nor ftfy and wcwidth, which it needs). Run here, where pip reaches PyPI:
#     bash bench/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
pins=$(grep -E '^open_clip_torch==' requirements.txt)
rm -rf .whl && mkdir .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "$pins" ftfy==6.3.1 wcwidth==0.9.4
ls -l .whl
