"""TSV-Merge (Gargiulo et al., 2025): Task Singular Vectors with interference reduction.

For each 2-D tensor: SVD of every ΔW_k, keep its first ⌊r/K⌋ singular triplets
(r = min(m, n)), concatenate the K blocks of U and of V, replace each concatenation by
its nearest orthogonal matrix (U Vᵀ of its own SVD) and rebuild ΔW = U⊥ diag(S) V⊥ᵀ.
Other tensors are averaged.  θ = θ_pre + λ · merged with λ = 1 by default.  When K > r,
⌊r/K⌋ = 0 and that tensor gets no update.
"""
from __future__ import annotations

import torch

from ..vectors import TaskVectors
from .registry import LAM, register


def nearest_orthogonal(a: torch.Tensor) -> torch.Tensor:
    """The orthogonal (semi-orthogonal) matrix closest to ``a`` in Frobenius norm: U Vᵀ of a = U S Vᵀ."""
    u, _, vh = torch.linalg.svd(a, full_matrices=False)
    return u @ vh


def tsv_matrix(deltas: list[torch.Tensor]) -> torch.Tensor:
    """Merge K task matrices ΔW_k (m × n) as TSV-M does."""
    m, n = deltas[0].shape
    per_task = min(m, n) // len(deltas)
    if per_task == 0:
        return torch.zeros_like(deltas[0])
    us, ss, vs = [], [], []
    for d in deltas:
        u, s, vh = torch.linalg.svd(d, full_matrices=False)
        us.append(u[:, :per_task])
        ss.append(s[:per_task])
        vs.append(vh[:per_task].T)
    u_orth = nearest_orthogonal(torch.cat(us, 1))
    v_orth = nearest_orthogonal(torch.cat(vs, 1))
    return (u_orth * torch.cat(ss)) @ v_orth.T


@register("tsv", "TSV-M", "per-layer task singular vectors, orthogonalised across tasks (Gargiulo et al., 2025)",
          params=(LAM.with_default(1.0, "TSV-M's α = 1.0 (Gargiulo et al., 2025)"),), order=50,
          reference="Gargiulo et al., 2025")
def tsv(tv: TaskVectors, p: dict) -> torch.Tensor:
    merged = tv.deltas.mean(0)
    for key, sl, shape in tv.layout.items():
        if len(shape) == 2:
            mats = [tv.deltas[k, sl].view(shape) for k in range(tv.K)]
            merged[sl] = tsv_matrix(mats).reshape(-1)
    return merged
