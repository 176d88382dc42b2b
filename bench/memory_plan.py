"""What the memory rule (tatr_core/placement.py) puts on the GPU for the standard CLIP zoos.

Prints, for ViT-B/32, ViT-B/16 and ViT-L/14 image towers with K = 8, 14 and 20 tasks on an 80 GB
H100 and a 141 GB H200 (all of it free), where the task vectors and one set of gradients live.
Pure arithmetic: the plan needs no GPU.

    .venv/bin/python bench/memory_plan.py
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tatr_core.placement import describe_plan, plan  # noqa: E402

#: image-tower parameters that a merge touches (open_clip / Hugging Face CLIP vision towers)
TOWERS = {"ViT-B/32": 87_849_216, "ViT-B/16": 86_192_640, "ViT-L/14": 304_293_888}
GPUS = {"H100 80 GB": 80 * 10**9, "H200 141 GB": 141 * 10**9}


def main() -> None:
    print("| GPU | tower | K | on the device (float32) |\n|---|---|---:|---|")
    for gpu, free in GPUS.items():
        for tower, n in TOWERS.items():
            for k in (8, 14, 20):
                print(f"| {gpu} | {tower} | {k} | {describe_plan(plan(k, n, 4, 'cuda', free=free))} |")


if __name__ == "__main__":
    main()
