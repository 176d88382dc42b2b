"""LiNeS (Wang et al., ICLR 2025, "LiNeS: Post-Training Layer Scaling Prevents Forgetting and Enhances
Model Merging") as a plug-in on any training-free method's merged task vector, composed after TATR.

The merged task vector m (the method's, after the trust-region mask when τ > 0) is scaled layer by
layer, less for shallow layers: the parameters of transformer block l (0 … L−1) by α + β·l/(L−1),
every other parameter (patch embedding, class and positional embeddings, the norms before and after
the blocks, the projection) by α.  θ = θ_pre + scaled m, so LiNeS takes the place of λ.  α follows
the released code's multi-task rule, α = ‖Σ_k Δ_k‖ / (K·‖m‖) (for Task Arithmetic, whose m is Σ_k Δ_k,
α = 1/K); β is LiNeS' parameter, which the released code searches in (0, 1] on validation
(``--lines-beta``; left out, LiNeS is off).  A model with one block scales everything by α.
"""
from __future__ import annotations

import re

import torch

from ..errors import TatrError
from ..trust_region import CHUNK
from ..vectors import TaskVectors
from .registry import MergeMethod, Param, Plugin, register_plugin

#: β of LiNeS' table rows, where nothing is chosen on validation: the middle of the released code's grid
ROW_BETA = 0.5
LINES_BETA = Param("lines_beta", float, None, "LiNeS: how much more of the merged update the last block keeps than "
                   "the first (β; the shallowest keeps α); left out, LiNeS is off", low=0.0,
                   grid=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0), label="LiNeS β",
                   source="the released LiNeS code searches β in (0, 1] on validation (Wang et al., 2025)")
BLOCK = re.compile(r"(?:^|\.)resblocks\.(\d+)\.")


def block_of(key: str) -> int | None:
    """The transformer block a parameter belongs to (None outside the blocks)."""
    match = BLOCK.search(key)
    return int(match.group(1)) if match else None


def layer_scales(tv: TaskVectors, alpha: float, beta: float) -> list[float]:
    """The factor of each tensor of ``tv``'s layout: α + β·l/(L−1) in block l, α elsewhere."""
    blocks = sorted({b for b in map(block_of, tv.layout.keys) if b is not None})
    depth = {b: n for n, b in enumerate(blocks)}
    last = max(len(blocks) - 1, 1)
    return [alpha if block_of(key) is None else alpha + beta * depth[block_of(key)] / last for key in tv.layout.keys]


def _norm(x: torch.Tensor) -> float:
    """‖x‖ in float64, block by block (no float64 copy of the whole vector)."""
    return sum(float(x[s:s + CHUNK].double().pow(2).sum()) for s in range(0, x.numel(), CHUNK)) ** 0.5


def resolve(spec: MergeMethod, given: dict) -> dict:
    beta = given.get("lines_beta")
    if beta is None:
        return {}
    if spec.uses_data or spec.task_aware:
        raise TatrError(f"LiNeS scales one merged task vector, which '{spec.name}' does not have as a training-free "
                        "merge; leave --lines-beta out")
    return {"lines_beta": LINES_BETA.check(spec.name, beta)}


def apply(tv: TaskVectors, merged: torch.Tensor, params: dict, state: dict) -> torch.Tensor:
    summed = torch.zeros_like(merged)
    for k in range(tv.K):
        summed += tv.deltas[k].to(merged.device)
    norm = _norm(merged)
    alpha = _norm(summed) / (tv.K * norm) if norm > 0 else 1.0 / tv.K
    state["lines_alpha"] = alpha
    out = merged.clone()
    for (key, sl, _), factor in zip(tv.layout.items(), layer_scales(tv, alpha, params["lines_beta"])):
        out[sl] *= factor
    return out


register_plugin(Plugin("lines", "LiNeS", "the merged task vector scaled layer by layer, less for shallow layers "
                       "(Wang et al., 2025), in place of λ", (LINES_BETA,), resolve, apply, replaces_lam=True,
                       reference="Wang et al., 2025", order=20,
                       rows=(("task_arithmetic", {"lines_beta": ROW_BETA}), ("ties", {"lines_beta": ROW_BETA}),
                             ("consensus", {"lines_beta": ROW_BETA}), ("tatr", {"lines_beta": ROW_BETA}))))
