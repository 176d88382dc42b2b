"""Model Stock (Jang et al., ECCV 2024, "Model Stock: All we need is just a few fine-tuned models").

Per parameter tensor l, the fine-tuned models' average is pulled toward θ_pre by a ratio set by the
angle between their task vectors: with θ_l the mean of the pairwise angles between the K task
vectors' l-th tensors (each pair's cos = ⟨Δ_i, Δ_j⟩ / (‖Δ_i‖‖Δ_j‖ + 1e-8), clipped to [−1, 1], its
angle averaged, as FusionBench's ``model_stock`` does for K > 2),

    t_l = K cos θ_l / ((K − 1) cos θ_l + 1),    θ = θ_pre + t_l · (1/K) Σ_k Δ_k  (tensor l).

No λ: the ratio is the method.  A tensor no task changed (Δ = 0) gets t = 0 and keeps θ_pre's
value.  The released code needs two models at least; with one (a leave-one-out merge of two tasks)
this returns that model (t = 1), a choice stated here.
"""
from __future__ import annotations

import math

import torch

from ..vectors import TaskVectors
from .registry import register

EPS = 1e-8


def stock_ratio(d: torch.Tensor) -> float:
    """t of one tensor from its (K, n) task vectors."""
    K = d.shape[0]
    if K < 2:
        return 1.0
    x = d.double()
    gram = x @ x.T
    norms = gram.diagonal().clamp_min(0).sqrt()
    angles = [math.acos(max(-1.0, min(1.0, float(gram[i, j] / (norms[i] * norms[j] + EPS)))))
              for i in range(K) for j in range(i + 1, K)]
    cos = math.cos(sum(angles) / len(angles))
    return K * cos / ((K - 1) * cos + 1 + EPS)


@register("model_stock", "Model Stock", "per tensor, the fine-tuned average pulled toward θ_pre by a ratio from the "
          "angle between the task vectors (Jang et al., 2024)", order=95, reference="Jang et al., 2024")
def model_stock(tv: TaskVectors, p: dict) -> torch.Tensor:
    merged = tv.deltas.mean(0)
    for key, sl, shape in tv.layout.items():
        merged[sl] *= stock_ratio(tv.deltas[:, sl])
    return merged
