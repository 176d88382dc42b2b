"""CART (Choi et al., 2024, "Revisiting Weight Averaging for Model Merging"): Centered Arithmetic with
Rank-reduced Task vectors, written from the paper's equation.

Weight averaging is Task Arithmetic around the average itself: with θ̄ = (1/K) Σ_k θ_k, each task's
*centred* vector θ_k − θ̄ = Δ_k − Δ̄ (Δ̄ the mean task vector).  CART keeps, for every 2-D weight, only
the top singular triplets of each centred matrix, a fraction ``rank_ratio`` of its rank, and adds them
back to the average:

    θ = θ̄ + λ_c Σ_k SVD_r(Δ_k − Δ̄),    r = max(1, ⌊rank_ratio · min(m, n)⌋).

Other tensors are the average (their centred vectors sum to zero).  Defaults: rank ratio 0.08, the
paper's finding that about 8% of the rank carries the task knowledge; λ_c = 1, the low-rank residuals
added back whole (the paper chooses λ on validation).  The top triplets come from the same route as
TSV-M's (``tatr_core.linalg.top_singular``: a float64 Gram for float32 input).
"""
from __future__ import annotations

import torch

from ..linalg import top_singular
from ..vectors import TaskVectors
from .registry import Param, register

RANK_RATIO = Param("rank_ratio", float, 0.08, "fraction of each centred matrix's rank kept", low=0.0, high=1.0,
                   low_open=True, grid=(0.02, 0.04, 0.08, 0.16, 0.32), label="rank ratio",
                   source="the paper's rank of about 8% (Choi et al., 2024)")
CART_LAMBDA = Param("cart_lambda", float, 1.0, "λ of the rank-reduced centred task vectors added to the average",
                    grid=(0.5, 1.0, 1.5, 2.0, 3.0), label="λ of the low-rank residuals",
                    source="1: the residuals added back whole (the paper chooses λ on validation)")


def low_rank(d: torch.Tensor, rank: int) -> torch.Tensor:
    """The best rank-``rank`` approximation of ``d``."""
    u, s, v = top_singular(d, rank)
    return (u * s) @ v.T


@register("cart", "CART", "the weight average plus a low-rank approximation of each task's centred task vector "
          "(Choi et al., 2024)", params=(RANK_RATIO, CART_LAMBDA), order=115, reference="Choi et al., 2024")
def cart(tv: TaskVectors, p: dict) -> torch.Tensor:
    mean = tv.deltas.mean(0)
    merged = mean.clone()
    for key, sl, shape in tv.layout.items():
        if len(shape) != 2:
            continue
        rank = max(1, int(p["rank_ratio"] * min(shape)))
        centre = mean[sl].view(shape)
        residual = sum(low_rank(tv.deltas[k, sl].view(shape) - centre, rank) for k in range(tv.K))
        merged[sl] = (centre + p["cart_lambda"] * residual).reshape(-1)
    return merged
