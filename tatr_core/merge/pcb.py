"""PCB-Merging (Du et al., 2024, "Parameter Competition Balancing for Model Merging"), in the form of
the authors' released ``PCB_merge`` (pcb-merging.py), written here from its description.

For task vectors Δ_1..Δ_K of N entries each:

1. **Outliers**: |Δ_k| is clamped to its own order statistics at 0.01% and 99.99%; Δ̃_k is Δ_k
   with that clamped magnitude.
2. **Intra-balancing** (a parameter's weight within its task): s_k = exp(K · norm(|Δ̃_k|)²), with
   norm the min–max scaling over the task's entries.
3. **Inter-balancing** (agreement with the other tasks): c_k = tanh(Δ_k ⊙ Σ_j Δ_j).
4. **Drop**: β_k = s_k ⊙ c_k; entries below β_k's order statistic at (1 − r)·N are raised to it,
   and β̂_k = norm(β_k), so exactly the dropped entries get weight 0 and the kept ones (the top
   fraction r) weights in (0, 1].
5. **Rescale**: merged = Σ_k β̂_k ⊙ Δ̃_k / Σ_k β̂_k (0 where no task keeps the entry), and
   θ = θ_pre + λ · merged.

Every floating-point parameter is treated the same way.  A constant vector (max = min) has
norm ≡ 0 here, where the released code divides by zero.  Defaults: r = 0.1, the released
function's ``pcb_ratio``; λ = 1.0, the middle of the per-task range [0.8, 1.3] the authors search
by evolution strategies on validation data (λ multiplies a weighted average, not a sum).
"""
from __future__ import annotations

import torch

from ..trust_region import count_for_fraction, kth_smallest
from ..vectors import TaskVectors
from .registry import LAM, Param, register

KEEP = Param("density", float, 0.1, "fraction r of each task's entries kept, largest balanced score first",
             low=0.0, high=1.0, low_open=True, grid=(0.05, 0.1, 0.2, 0.3, 0.5), label="kept fraction r",
             source="the released PCB_merge's pcb_ratio 0.1 (Du et al., 2024)")
OUTLIER = 1e-4  #: fraction of |Δ_k| clamped at each end


def order_statistic(x: torch.Tensor, index: int) -> torch.Tensor:
    """sorted(x)[index] (0-based), exactly, for any length (no 16M limit, no full sort)."""
    index = min(max(int(index), 0), x.numel() - 1)
    return kth_smallest(x, index + 1)


def min_max(x: torch.Tensor) -> torch.Tensor:
    low, high = x.min(), x.max()
    return (x - low) / (high - low) if bool(high > low) else torch.zeros_like(x)


def pcb_scores(deltas: torch.Tensor, k: int, keep: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(β̂_k, Δ̃_k) of task ``k``: its balanced, dropped-and-normalised weights and its clamped vector."""
    K, N = deltas.shape
    d = deltas[k]
    magnitude = d.abs()
    magnitude = magnitude.clamp(order_statistic(magnitude, int(N * OUTLIER)),
                                order_statistic(magnitude, int(N * (1 - OUTLIER)) - 1))
    clamped = torch.sign(d) * magnitude
    intra = torch.exp(K * min_max(magnitude) ** 2)
    inter = torch.tanh(d * deltas.sum(0))
    beta = intra * inter
    threshold = order_statistic(beta, count_for_fraction(1.0 - keep, N))
    return min_max(beta.clamp_min(threshold)), clamped


@register("pcb", "PCB-Merging", "task vectors weighted per parameter by intra- and inter-task balancing, the "
          "lowest scores dropped, the rest rescaled (Du et al., 2024)",
          params=(LAM.with_default(1.0, "the middle of PCB's per-task λ range [0.8, 1.3] (Du et al., 2024)"), KEEP),
          order=90, reference="Du et al., 2024")
def pcb(tv: TaskVectors, p: dict) -> torch.Tensor:
    numerator = torch.zeros(tv.N, dtype=tv.dtype, device=tv.deltas.device)
    denominator = torch.zeros_like(numerator)
    for k in range(tv.K):  # one task at a time: O(N) extra memory
        weight, clamped = pcb_scores(tv.deltas, k, p["density"])
        numerator += weight * clamped
        denominator += weight
    return numerator / denominator.clamp_min(1e-12)
