"""MagMax (Marczak et al., 2024, "MagMax: Leveraging Model Merging for Seamless Continual Learning").

Per parameter, the task-vector entry of largest magnitude (its sign kept): merged[n] = Δ_{t*}[n]
with t* = argmax_t |Δ_t[n]|; among equal magnitudes the last task wins, as in the official code and
FusionBench (their running ``torch.where(|Δ_t| >= |best|, Δ_t, best)`` over the tasks in order).  θ = θ_pre + λ · merged.  Every
floating-point parameter is treated the same way.

Default λ = 0.5: the official 8-dataset reproduction script's scaling_coef (as FusionBench's
``magmax.yaml`` notes).
"""
from __future__ import annotations

import torch

from ..trust_region import CHUNK
from ..vectors import TaskVectors
from .registry import LAM, register


@register("magmax", "MagMax", "per parameter, the task-vector entry of largest magnitude (Marczak et al., 2024)",
          params=(LAM.with_default(0.5, "MagMax's scaling 0.5 for 8 tasks (Marczak et al., 2024; FusionBench)"),),
          order=80, reference="Marczak et al., 2024", revision=2)  # 2: ties go to the last task
def magmax(tv: TaskVectors, p: dict) -> torch.Tensor:
    merged = torch.empty(tv.N, dtype=tv.dtype, device=tv.deltas.device)
    for start in range(0, tv.N, CHUNK):
        d = tv.deltas[:, start:start + CHUNK]
        pick = tv.K - 1 - d.abs().flip(0).argmax(0, keepdim=True)  # the last task among equal magnitudes
        merged[start:start + CHUNK] = d.gather(0, pick)[0]
    return merged
