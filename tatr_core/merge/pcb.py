"""PCB-Merging (Du et al., 2024, "Parameter Competition Balancing for Model Merging"), in the two forms
the authors released, written here from their description.  ``variant`` chooses one:

* ``vision`` (the default): the ViT scripts behind the paper's vision results
  (``vision_source_code/pcb.py``, ``pcb_ES.py``), the ones for CLIP zoos;
* ``released``: ``PCB_merge`` in ``pcb-merging.py``, the repository's general function (its T5
  experiments, the paper's NLP tables).

For task vectors Δ_1..Δ_K of N entries each:

1. **Outliers**: |Δ_k| is clamped to its own order statistics at ``outlier`` and 1 − ``outlier``
   (vision: 1%; released: 0.01%); Δ̃_k is Δ_k with that clamped magnitude.
2. **Intra-balancing** (a parameter's weight within its task): s_k = exp(K · norm(|Δ̃_k|)²), with
   norm the min–max scaling over the task's entries.
3. **Inter-balancing** (agreement with the other tasks): c_k = tanh(Δ_k ⊙ A) with
   A = Σ_j sign(Δ_j) ⊙ norm(|Δ̃_j|) in the vision scripts, A = Σ_j Δ_j in the released function.
4. **Drop**: β_k = s_k ⊙ c_k; entries below β_k's order statistic at (1 − r)·N are raised to it,
   and β̂_k = norm(β_k), so exactly the dropped entries get weight 0 and the kept ones (the top
   fraction r: vision 5%, released 10%) weights in (0, 1].
5. **Rescale**: merged = Σ_k β̂_k ⊙ Δ̃_k / Σ_k β̂_k (0 where no task keeps the entry), and
   θ = θ_pre + λ · merged.

Every floating-point parameter is treated the same way.  A constant vector (max = min) has
norm ≡ 0 here, where the released code divides by zero.  λ: the vision scripts' 1.2 (the value their
evolution-strategy search settles on and ``pcb.py`` fixes for every task); for the released function
1.0, the middle of the per-task range [0.8, 1.3] the paper searches (λ multiplies a weighted
average, not a sum).  On the same inputs the two variants' merged vectors differ by about a quarter
(relative L2), so the variant is part of every result's key.
"""
from __future__ import annotations

import torch

from ..trust_region import count_for_fraction, kth_smallest
from ..vectors import TaskVectors
from .registry import LAM, Param, register

VARIANT = Param("variant", str, "vision", "which released PCB: the ViT scripts behind the paper's vision results, or "
                "the general PCB_merge function", choices=("vision", "released"), label="PCB variant",
                source="vision: vision_source_code/pcb.py (Du et al., 2024), the code for CLIP zoos")
KEEP = Param("density", float, 0.05, "fraction r of each task's entries kept, largest balanced score first",
             low=0.0, high=1.0, low_open=True, grid=(0.05, 0.1, 0.2, 0.3, 0.5), label="kept fraction r",
             source="the vision scripts' att_ratio 0.05; the released PCB_merge's pcb_ratio 0.1 (Du et al., 2024)")
OUTLIER = Param("outlier", float, 0.01, "fraction of each |Δ_k| clamped at each end (outliers)", low=0.0, high=0.5,
                high_open=True, grid=(0.0001, 0.001, 0.01), label="outlier fraction",
                source="the vision scripts' 1% (min_ratio = max_ratio = 0.01); PCB_merge's 0.01%")
#: each variant's defaults, from its own code
VARIANTS = {"vision": {"density": 0.05, "outlier": 0.01, "lam": 1.2},
            "released": {"density": 0.1, "outlier": 0.0001, "lam": 1.0}}


def order_statistic(x: torch.Tensor, index: int) -> torch.Tensor:
    """sorted(x)[index] (0-based), exactly, for any length (no 16M limit, no full sort)."""
    index = min(max(int(index), 0), x.numel() - 1)
    return kth_smallest(x, index + 1)


def min_max(x: torch.Tensor) -> torch.Tensor:
    low, high = x.min(), x.max()
    return (x - low) / (high - low) if bool(high > low) else torch.zeros_like(x)


def clamped_magnitude(d: torch.Tensor, outlier: float) -> torch.Tensor:
    """|d| clamped to its own order statistics at ``outlier`` and 1 − ``outlier``."""
    n = d.numel()
    magnitude = d.abs()
    return magnitude.clamp(order_statistic(magnitude, int(n * outlier)),
                           order_statistic(magnitude, int(n * (1 - outlier)) - 1))


def agreement(deltas: torch.Tensor, variant: str, outlier: float) -> torch.Tensor:
    """A of the inter-balancing term: Σ_j sign(Δ_j) ⊙ norm(|Δ̃_j|) (vision) or Σ_j Δ_j (released)."""
    if variant == "released":
        return deltas.sum(0)
    total = torch.zeros(deltas.shape[1], dtype=deltas.dtype, device=deltas.device)
    for j in range(deltas.shape[0]):  # one task at a time: O(N) extra memory
        total += torch.sign(deltas[j]) * min_max(clamped_magnitude(deltas[j], outlier))
    return total


def pcb_scores(deltas: torch.Tensor, k: int, keep: float, variant: str = "released", outlier: float = 1e-4,
               shared: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(β̂_k, Δ̃_k) of task ``k``: its balanced, dropped-and-normalised weights and its clamped vector.
    ``shared``: the agreement term A, when the caller has computed it for every task."""
    K, N = deltas.shape
    d = deltas[k]
    magnitude = clamped_magnitude(d, outlier)
    clamped = torch.sign(d) * magnitude
    intra = torch.exp(K * min_max(magnitude) ** 2)
    inter = torch.tanh(d * (agreement(deltas, variant, outlier) if shared is None else shared))
    beta = intra * inter
    threshold = order_statistic(beta, count_for_fraction(1.0 - keep, N))
    return min_max(beta.clamp_min(threshold)), clamped


@register("pcb", "PCB-Merging", "task vectors weighted per parameter by intra- and inter-task balancing, the "
          "lowest scores dropped, the rest rescaled (Du et al., 2024)",
          params=(LAM.with_default(1.2, "the vision scripts' λ 1.2 for every task; PCB_merge's 1.0, the middle of the "
                                        "per-task range [0.8, 1.3] (Du et al., 2024)"), VARIANT, KEEP, OUTLIER),
          order=90, reference="Du et al., 2024", revision=2, variant_defaults=VARIANTS)  # 2: the vision variant
def pcb(tv: TaskVectors, p: dict) -> torch.Tensor:
    shared = agreement(tv.deltas, p["variant"], p["outlier"])
    numerator = torch.zeros(tv.N, dtype=tv.dtype, device=tv.deltas.device)
    denominator = torch.zeros_like(numerator)
    for k in range(tv.K):  # one task at a time: O(N) extra memory
        weight, clamped = pcb_scores(tv.deltas, k, p["density"], p["variant"], p["outlier"], shared)
        numerator += weight * clamped
        denominator += weight
    return numerator / denominator.clamp_min(1e-12)
