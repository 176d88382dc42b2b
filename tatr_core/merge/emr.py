"""EMR-Merging (Huang et al., NeurIPS 2024, "EMR-Merging: Tuning-Free High-Performance Model Merging"),
following FusionBench's ``emr_merge``: Elect, Mask, Rescale.  One model per task, so it is evaluated
task-aware (each task with its own model) and its table rows say so.

* **Elect** a unified task vector: the sign γ = sgn(Σ_k Δ_k), and per entry the largest |Δ_k| among
  the tasks that agree with it: τ_uni = γ ⊙ max_k |Δ_k ⊙ 1{Δ_k γ > 0}|.
* **Mask** per task: M_k = 1{Δ_k ⊙ γ > 0}, the entries where task k agrees with the elected sign.
* **Rescale** per task: λ_k = Σ_l mean|Δ_k,l| / Σ_l mean|M_k,l ⊙ τ_uni,l| over the parameter tensors l
  (each tensor's mean, summed, as the released code does).

Task k's model is θ_pre + λ_k (M_k ⊙ τ_uni), built when it is evaluated; θ_pre + τ_uni serves a task
outside the merge.  The TATR plug-in masks τ_uni (the rescalers are computed before it).  No λ: the
rescalers are the method's.
"""
from __future__ import annotations

import torch

from ..trust_region import CHUNK
from ..vectors import TaskVectors
from .registry import Combined, register


def elect(deltas: torch.Tensor) -> torch.Tensor:
    """τ_uni from the (K, N) task vectors, in column blocks."""
    out = torch.empty(deltas.shape[1], dtype=deltas.dtype, device=deltas.device)
    for start in range(0, deltas.shape[1], CHUNK):
        d = deltas[:, start:start + CHUNK]
        sign = torch.sign(d.sum(0))
        out[start:start + CHUNK] = sign * (d.abs() * (d * sign > 0)).amax(0)
    return out


def rescalers(tv: TaskVectors, unified: torch.Tensor) -> list[float]:
    """λ_k: each task's summed per-tensor mean |Δ_k| over that of its masked unified vector."""
    out = []
    for k in range(tv.K):
        own = masked = 0.0
        for _, sl, _ in tv.layout.items():
            d = tv.deltas[k, sl]
            own += float(d.abs().double().mean())
            masked += float((unified[sl] * (d * unified[sl] > 0)).abs().double().mean())
        out.append(own / masked if masked > 0 else 0.0)
    return out


@register("emr", "EMR-Merging", "an elected unified task vector, and per task a mask and a rescaler: one model per "
          "task, evaluated task-aware (Huang et al., 2024)", order=120, reference="Huang et al., 2024", task_aware=True,
          rows=(("EMR-Merging (task-aware)", {}),))
def emr(tv: TaskVectors, p: dict) -> Combined:
    unified = elect(tv.deltas)
    scales = rescalers(tv, unified)

    def task_vector(k: int) -> torch.Tensor:
        return scales[k] * unified * (tv.deltas[k] * unified > 0)

    # stored: τ_uni in float32, one bit per entry for each mask, one number per rescaler
    stored = (tv.N + tv.K * tv.N / 32 + tv.K) / (tv.K * tv.N)
    return Combined(unified, task_vector, {"rescalers": dict(zip(tv.names, scales)), "stored_fraction": stored})
