"""DARE (Yu et al., 2024, "Language Models are Super Mario: Absorbing Abilities from Homologous
Models as a Free Lunch"): Drop And REscale each task vector, then merge with a base method.

Every entry of every task vector is dropped with probability p (a seeded Bernoulli draw: one
generator seeded with ``seed``, task after task) and the survivors are multiplied by 1/(1−p), so
each entry keeps its expectation.  The processed vectors are then merged by ``base``: Task
Arithmetic (θ_pre + λ Σ_k Δ̃_k) or TIES (trim to ``density``, elect, sum or mean of the agreeing
entries as ``merge_func`` says, × λ).  Every
floating-point parameter is processed, biases and norms included (FusionBench's
``only_on_linear_weights: false``).  p = 0 draws nothing and is the base method bit for bit.

Defaults: p = 0.5 and λ = 0.3 are FusionBench's setting for CLIP ViT-B/32
(``config/method/dare/task_arithmetic.yaml``: sparsity_ratio 0.5, scaling_factor 0.3); the DARE
paper's p = 0.9 is for language models.
"""
from __future__ import annotations

from typing import Iterator

import torch

from ..vectors import TaskVectors
from .registry import DENSITY, LAM, SEED, Param, register
from .ties import MERGE_FUNC, ties_merge

DROP_RATE = Param("drop_rate", float, 0.5, "probability p of dropping each task-vector entry (survivors × 1/(1−p))",
                  low=0.0, high=1.0, high_open=True, grid=(0.0, 0.1, 0.3, 0.5, 0.7, 0.9), label="drop rate p",
                  source="FusionBench's CLIP ViT-B/32 setting (sparsity_ratio 0.5)")
BASE = Param("base", str, "task_arithmetic", "the merge applied to the dropped-and-rescaled task vectors",
             choices=("task_arithmetic", "ties"), label="base merge", source="DARE's Task Arithmetic base")


def dare_keep_masks(K: int, N: int, p: float, seed: int) -> Iterator[torch.Tensor]:
    """The K seeded keep masks (bool, N): entry kept with probability 1 − p, one generator for all tasks."""
    generator = torch.Generator().manual_seed(int(seed))
    for _ in range(K):
        # drawn on the CPU, so a seed gives the same drops on every device
        yield torch.rand(N, generator=generator, device="cpu") >= p


def dare_processed(deltas: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """(K, N): each task vector with its entries dropped with probability p and the rest × 1/(1−p)."""
    if p == 0:
        return deltas
    out = torch.empty_like(deltas)
    for k, keep in enumerate(dare_keep_masks(deltas.shape[0], deltas.shape[1], p, seed)):
        out[k] = deltas[k] * keep.to(deltas.device) / (1.0 - p)
    return out


@register("dare", "DARE", "drop each task-vector entry with probability p, rescale the rest by 1/(1−p), then merge "
          "with Task Arithmetic or TIES (Yu et al., 2024)",
          params=(LAM, DROP_RATE, BASE, DENSITY.with_default(0.2, help="TIES base: fraction of each processed task "
                                                             "vector kept by the trim"),
                  MERGE_FUNC.with_default("sum", help="TIES base: " + MERGE_FUNC.help), SEED),
          order=60, reference="Yu et al., 2024")
def dare(tv: TaskVectors, p: dict) -> torch.Tensor:
    processed = dare_processed(tv.deltas, p["drop_rate"], p["seed"])
    return ties_merge(processed, p["density"], p["merge_func"]) if p["base"] == "ties" else processed.sum(0)
