"""TSV-Merge (Gargiulo et al., 2025): Task Singular Vectors with interference reduction.

For each 2-D tensor: SVD of every ΔW_k, keep its first ⌊r/K⌋ singular triplets
(r = min(m, n)), concatenate the K blocks of U and of V, replace each concatenation by
its nearest orthogonal matrix (U Vᵀ of its own SVD) and rebuild ΔW = U⊥ diag(S) V⊥ᵀ.
Other tensors are averaged.  θ = θ_pre + λ · merged with λ = 1 by default.  When K > r,
⌊r/K⌋ = 0 and that tensor gets no update.  The triplets and the polar factors come from
:mod:`tatr_core.linalg` (for float32 task vectors, float64 Gram matrices and, on the CPU, only the top
⌊r/K⌋ eigenpairs: no full decomposition of a task matrix).

Where a task matrix's rank is below ⌊r/K⌋, its triplets past the rank have σ = 0 and arbitrary
singular vectors; they carry no weight themselves, but they enter the orthogonalisation of the
concatenated blocks, so the merged matrix depends on which basis of the null space the solver
returns (any SVD implementation's choice; the authors' code included).  This route then takes the SVD
(the Gram route refuses σ_p below GRAM_MIN_RATIO·σ_1).

TSV-C (``tsv_c``), the paper's compression: each task keeps only the top ⌊f·r⌋ singular triplets of
each of its matrices (its other tensors whole), one small model per task, evaluated task-aware; the
record states the stored size against the full task vectors'.  The one model for a task outside
the merge is the mean of the compressed task vectors.
"""
from __future__ import annotations

import torch

from ..linalg import nearest_orthogonal, top_singular
from ..vectors import TaskVectors
from .registry import LAM, Combined, Param, register


def tsv_matrix(deltas: list[torch.Tensor]) -> torch.Tensor:
    """Merge K task matrices ΔW_k (m × n) as TSV-M does."""
    m, n = deltas[0].shape
    per_task = min(m, n) // len(deltas)
    if per_task == 0:
        return torch.zeros_like(deltas[0])
    us, ss, vs = zip(*(top_singular(d, per_task) for d in deltas))
    u_orth = nearest_orthogonal(torch.cat(us, 1))
    v_orth = nearest_orthogonal(torch.cat(vs, 1))
    return (u_orth * torch.cat(ss)) @ v_orth.T


@register("tsv", "TSV-M", "per-layer task singular vectors, orthogonalised across tasks (Gargiulo et al., 2025)",
          params=(LAM.with_default(1.0, "TSV-M's α = 1.0 (Gargiulo et al., 2025)"),), order=50,
          reference="Gargiulo et al., 2025", revision=2)  # 2: float32 inputs take the float64 Gram route
def tsv(tv: TaskVectors, p: dict) -> torch.Tensor:
    merged = tv.deltas.mean(0)
    for key, sl, shape in tv.layout.items():
        if len(shape) == 2:
            mats = [tv.deltas[k, sl].view(shape) for k in range(tv.K)]
            merged[sl] = tsv_matrix(mats).reshape(-1)
    return merged


TSV_FRACTION = Param("rank_fraction", float, 0.05, "fraction of each task matrix's singular triplets kept",
                     low=0.0, high=1.0, low_open=True, grid=(0.02, 0.05, 0.1, 0.2, 0.5), label="kept rank fraction",
                     source="the TSV paper's compression to about 10% of each task's size (a square matrix's top 5% "
                            "of singular triplets; Gargiulo et al., 2025)")


def compressed_task_vector(tv: TaskVectors, k: int, fraction: float) -> torch.Tensor:
    """Task ``k``'s vector with every 2-D tensor replaced by its top ⌊fraction·r⌋ singular triplets (at least one)."""
    out = tv.deltas[k].clone()
    for key, sl, shape in tv.layout.items():
        if len(shape) == 2:
            u, s, v = top_singular(tv.deltas[k, sl].view(shape), max(1, int(fraction * min(shape))))
            out[sl] = ((u * s) @ v.T).reshape(-1)
    return out


def stored_fraction(tv: TaskVectors, fraction: float) -> float:
    """The compressed task vectors' size over the full task vectors': k(m + n + 1) numbers per matrix,
    every other tensor whole."""
    kept = 0
    for _, _, shape in tv.layout.items():
        if len(shape) == 2:
            kept += max(1, int(fraction * min(shape))) * (shape[0] + shape[1] + 1)
        else:
            kept += shape.numel()
    return kept / tv.N


@register("tsv_c", "TSV-C", "each task's matrices compressed to their top singular triplets: one small model per "
          "task, evaluated task-aware (Gargiulo et al., 2025)", params=(TSV_FRACTION,), order=52,
          reference="Gargiulo et al., 2025", task_aware=True, rows=(("TSV-C (task-aware)", {}),))
def tsv_c(tv: TaskVectors, p: dict) -> Combined:
    def task_vector(k: int) -> torch.Tensor:
        return compressed_task_vector(tv, k, p["rank_fraction"])

    mean = sum(task_vector(k) for k in range(tv.K)) / tv.K  # the one model, for tasks outside the merge
    return Combined(mean, task_vector, {"stored_fraction": stored_fraction(tv, p["rank_fraction"])})
