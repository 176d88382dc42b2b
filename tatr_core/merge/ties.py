"""TIES-Merging (Yadav et al., 2023): Trim, Elect sign, disjoint Merge.

Two ways to combine the entries that agree with the elected sign (``merge_func``):

* ``sum`` (the default): their sum, then θ_pre + λ·sum with λ = 0.3.  This is the protocol behind
  the TIES rows of the TATR paper (72.4 on ViT-B/32, taken from the AdaMerging line of work) and
  FusionBench's default (``merge_func: sum``, ``scaling_factor: 0.3``); AdaMerging++ learns its
  coefficients for the same summed vectors.
* ``mean``: the TIES paper's disjoint mean (each entry divided by its number of agreeing tasks),
  meant for its larger λ (the paper tunes λ on validation, typically near 1).
"""
from __future__ import annotations

import torch

from ..trust_region import CHUNK, count_for_fraction, top_k_mask
from ..vectors import TaskVectors
from .registry import DENSITY, LAM, Param, register

MERGE_FUNC = Param("merge_func", str, "sum", "how the entries that agree with the elected sign are combined: their sum "
                   "(the TATR / AdaMerging / FusionBench protocol) or the TIES paper's disjoint mean",
                   choices=("sum", "mean"), label="agreeing entries",
                   source="the TATR paper's TIES rows and FusionBench's merge_func: sum")


def check_density(density: float, method: str = "ties") -> float:
    """The TIES trim's density, checked by its one declaration (:data:`registry.DENSITY`)."""
    return DENSITY.check(method, density)


def trim_masks(deltas: torch.Tensor, density: float) -> torch.Tensor:
    """(K, N) bool: per task, exactly ⌊density·N⌋ entries of largest |Δ_k| (ties by lower index)."""
    K, N = deltas.shape
    keep = count_for_fraction(density, N)
    return torch.stack([top_k_mask(deltas[k].abs(), keep) for k in range(K)])


def ties_merge(deltas: torch.Tensor, density: float, merge_func: str = "sum") -> torch.Tensor:
    """Trim each row of ``deltas`` (K, N) to its top-density entries, elect signs, and sum (or
    average, ``merge_func="mean"``) the entries that agree with the elected sign."""
    density = check_density(density)
    merge_func = MERGE_FUNC.check("ties", merge_func)
    K, N = deltas.shape
    keep = trim_masks(deltas, density)
    merged = torch.empty(N, dtype=deltas.dtype, device=deltas.device)
    for start in range(0, N, CHUNK):
        sl = slice(start, min(start + CHUNK, N))
        trimmed = deltas[:, sl] * keep[:, sl]
        elected = torch.sign(trimmed.sum(0))
        agree = (torch.sign(trimmed) == elected) & (trimmed != 0)
        merged[sl] = (trimmed * agree).sum(0)
        if merge_func == "mean":
            merged[sl] /= agree.sum(0).clamp(min=1)
    return merged


@register("ties", "Ties-Merging", "trim each Δ_k to its top-density entries, elect signs, sum (or average) the "
          "agreeing ones", params=(LAM, DENSITY, MERGE_FUNC), order=40, reference="Yadav et al., 2023")
def ties(tv: TaskVectors, p: dict) -> torch.Tensor:
    return ties_merge(tv.deltas, p["density"], p["merge_func"])


def ties_processed(deltas: torch.Tensor, density: float) -> torch.Tensor:
    """(K, N): each task vector trimmed to its top-density entries and kept only where its sign
    agrees with the elected sign (the per-task vectors AdaMerging++ learns coefficients for)."""
    density = check_density(density)
    keep = trim_masks(deltas, density)
    out = torch.empty_like(deltas)
    for start in range(0, deltas.shape[1], CHUNK):
        sl = slice(start, min(start + CHUNK, deltas.shape[1]))
        trimmed = deltas[:, sl] * keep[:, sl]
        elected = torch.sign(trimmed.sum(0))
        out[:, sl] = trimmed * ((torch.sign(trimmed) == elected) & (trimmed != 0))
    return out
