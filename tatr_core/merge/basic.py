"""Weight averaging, Task Arithmetic (Eq. 2) and TATR (Eq. 10)."""
from __future__ import annotations

import torch

from ..vectors import TaskVectors
from .registry import LAM, register


@register("average", "Weight Averaging", "mean of the fine-tuned weights: θ_pre + (1/K) Σ_k Δ_k", order=10,
          reference="Wortsman et al., 2022")
def average(tv: TaskVectors, p: dict) -> torch.Tensor:
    return tv.deltas.mean(0)


@register("task_arithmetic", "Task Arithmetic", "θ_pre + λ Σ_k Δ_k (Ilharco et al., 2023)", params=(LAM,), order=20,
          reference="Ilharco et al., 2023")
def task_arithmetic(tv: TaskVectors, p: dict) -> torch.Tensor:
    return tv.deltas.sum(0)


@register("tatr", "TATR", "Task Arithmetic inside the trust region: θ_pre + λ Σ_k Δ_k ⊙ m (Eq. 10)",
          params=(LAM,), default_tau=0.01, order=30, reference="the TATR paper")
def tatr(tv: TaskVectors, p: dict) -> torch.Tensor:
    return task_arithmetic(tv, p)
