"""Consensus Merging with TALL masks (Wang et al., 2024, "Localizing Task Information for Improved
Model Merging and Compression").

The multi-task vector is Δ_MTL = Σ_s Δ_s.  Task t's TALL mask marks the weights where its own
vector dominates the others': m_t = 1{|Δ_t| ≥ λ_t · |Δ_MTL − Δ_t|}.  A weight is kept only where at
least k tasks claim it; the merged vector is Task Arithmetic on what is kept:
θ = θ_pre + α · Δ_MTL ⊙ 1{Σ_t m_t ≥ k}.  Every floating-point parameter is masked the same way.
k = 0 keeps everything and is Task Arithmetic.  With more than K tasks asked for (k > K: one task
and the default k = 2), no weight is claimed often enough, and the merge is θ_pre: the TALL authors'
code does so ("reduce to zero-shot"), and so does this one (it capped k at K before).

Defaults: k = 2 (the paper's choice: weights used by at most one task are "selfish" and dropped);
λ_t = 0.6 for every task (FusionBench's ``tall_mask_lambda``; the paper picks λ_t per task on
validation from {0.2, …, 0.6}); α = 0.3, Task Arithmetic's λ, as in the paper's Consensus TA.
"""
from __future__ import annotations

import torch

from ..trust_region import CHUNK
from ..vectors import TaskVectors
from .registry import LAM, Param, register

TALL_LAMBDA = Param("tall_lambda", float, 0.6, "λ_t of the TALL masks |Δ_t| ≥ λ_t·|Σ_s Δ_s − Δ_t| (every task)",
                    low=0.0, grid=(0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0), label="TALL mask λ",
                    source="FusionBench's tall_mask_lambda 0.6 (the paper tunes it per task in [0.2, 0.6])")
MIN_TASKS = Param("min_tasks", int, 2, "k: keep a weight only where at least k tasks' TALL masks claim it",
                  low=0, grid=(0, 1, 2, 3, 4), label="k: tasks that must claim a weight",
                  source="the paper's k = 2 (Wang et al., 2024)")


def consensus_mask(deltas: torch.Tensor, tall_lambda: float, min_tasks: int, start: int, stop: int) -> torch.Tensor:
    """1{Σ_t m_t ≥ k} on entries [start, stop) of the (K, N) task vectors."""
    d = deltas[:, start:stop]
    mtl = d.sum(0)
    claims = (d.abs() >= tall_lambda * (mtl - d).abs()).sum(0)
    return claims >= int(min_tasks)


@register("consensus", "Consensus TA", "Task Arithmetic on the weights that at least k tasks' TALL masks claim "
          "(Wang et al., 2024)", params=(LAM, TALL_LAMBDA, MIN_TASKS), order=70, reference="Wang et al., 2024",
          revision=2)  # 2: k > K gives θ_pre, as the authors' code does
def consensus(tv: TaskVectors, p: dict) -> torch.Tensor:
    merged = tv.deltas.sum(0)
    for start in range(0, tv.N, CHUNK):
        stop = min(start + CHUNK, tv.N)
        merged[start:stop] *= consensus_mask(tv.deltas, p["tall_lambda"], p["min_tasks"], start, stop)
    return merged
