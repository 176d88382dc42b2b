"""Isotropic merging (Marczak et al., 2025, "No Task Left Behind: Isotropic Model Merging with
Common and Task-Specific Subspaces"): Iso-C and Iso-CTS.

**Iso-C**: for every 2-D parameter, the Task Arithmetic sum Σ_k ΔW_k = U S Vᵀ is replaced by
σ̄ · U Vᵀ, its singular values flattened to their mean σ̄ (an isotropic spectrum).

**Iso-CTS**: for every 2-D parameter (m × n, r = min(m, n)), the top k singular vectors of the
sum span a common subspace, k = ⌊r · f⌋ adjusted so that the rest divides evenly among the K
tasks (s = round((r − k)/K) directions each); each task adds the top s singular vectors of its
own ΔW_k with the common subspace projected out, (I − U_c U_cᵀ) ΔW_k.  The r collected left and
right directions are made orthonormal (each block replaced by its nearest orthogonal matrix) and
every singular value set to the mean σ̄ of the r collected ones.

Non-matrix parameters (biases, norms, embeddings, conv1's 4-D kernel) take the plain average of
the task vectors, as in the authors' code.  θ = θ_pre + α · merged.

Defaults: α = 1.0 and f = 0.8, the released code's defaults (FusionBench ``iso_c.yaml`` /
``iso_cts.yaml``); the paper tunes α on validation data.
"""
from __future__ import annotations

import torch

from ..linalg import nearest_orthogonal, top_singular
from ..vectors import TaskVectors
from .registry import LAM, Param, register

ALPHA_ISO = LAM.with_default(1.0, "the released code's α = 1.0 (Marczak et al., 2025; FusionBench)",
                             help="scaling α of the isotropic merged task vector")
COMMON = Param("common_fraction", float, 0.8, "fraction f of each matrix's rank given to the common subspace",
               low=0.0, high=1.0, grid=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), label="common subspace fraction f",
               source="the released Iso-CTS default 0.8 (Marczak et al., 2025)")


def iso_c_matrix(deltas: list[torch.Tensor]) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(sum(deltas), full_matrices=False)
    return s.mean() * (u @ vh)


def iso_cts_matrix(deltas: list[torch.Tensor], common_fraction: float) -> torch.Tensor:
    K = len(deltas)
    r = min(deltas[0].shape)
    common = int(r * common_fraction)
    per_task = round((r - common) / K)
    common = r - per_task * K
    if common < 0:  # more tasks than leftover directions: the whole rank is shared
        common, per_task = r, 0
    u, s, v = top_singular(sum(deltas), common)
    us, ss, vs = [u], [s], [v.T]
    if per_task:
        # (I − U_c U_cᵀ) ΔW_k: through U_cᵀ ΔW_k when that is cheaper (2c < m) than the m × m projector
        projector = u @ u.T if 2 * u.shape[1] >= u.shape[0] else None
        for d in deltas:
            residual = d - projector @ d if projector is not None else d - u @ (u.T @ d)
            tu, ts, tv = top_singular(residual, per_task)
            us.append(tu)
            ss.append(ts)
            vs.append(tv.T)
    left, right = nearest_orthogonal(torch.cat(us, 1)), nearest_orthogonal(torch.cat(vs, 0))
    return torch.cat(ss).mean() * (left @ right)


def _isotropic(tv: TaskVectors, matrix_merge) -> torch.Tensor:
    merged = tv.deltas.mean(0)  # non-matrix parameters: the plain average
    for key, sl, shape in tv.layout.items():
        if len(shape) == 2:
            merged[sl] = matrix_merge([tv.deltas[k, sl].view(shape) for k in range(tv.K)]).reshape(-1)
    return merged


@register("iso_c", "Iso-C", "per matrix, the Task Arithmetic sum with its singular values flattened to their mean "
          "(Marczak et al., 2025)", params=(ALPHA_ISO,), order=100, reference="Marczak et al., 2025")
def iso_c(tv: TaskVectors, p: dict) -> torch.Tensor:
    return _isotropic(tv, iso_c_matrix)


@register("iso_cts", "Iso-CTS", "per matrix, a common subspace of the sum plus task-specific subspaces, then an "
          "isotropic spectrum (Marczak et al., 2025)", params=(ALPHA_ISO, COMMON), order=110,
          reference="Marczak et al., 2025", revision=2)  # 2: float32 inputs take the float64 Gram route
def iso_cts(tv: TaskVectors, p: dict) -> torch.Tensor:
    return _isotropic(tv, lambda mats: iso_cts_matrix(mats, p["common_fraction"]))
