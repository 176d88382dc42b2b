"""TSV-Merge (Gargiulo et al., 2025): Task Singular Vectors with interference reduction.

For each 2-D tensor: SVD of every ΔW_k, keep its first ⌊r/K⌋ singular triplets
(r = min(m, n)), concatenate the K blocks of U and of V, replace each concatenation by
its nearest orthogonal matrix (U Vᵀ of its own SVD) and rebuild ΔW = U⊥ diag(S) V⊥ᵀ.
Other tensors are averaged.  θ = θ_pre + λ · merged with λ = 1 by default.  When K > r,
⌊r/K⌋ = 0 and that tensor gets no update.

TSV-C (``tsv_c``), the paper's compression: each task keeps only the top ⌊f·r⌋ singular triplets of
each of its matrices (its other tensors whole), one small model per task, evaluated task-aware; the
record states the stored size against the full task vectors'.  The one model for a task outside
the merge is the mean of the compressed task vectors.
"""
from __future__ import annotations

import torch

from ..vectors import TaskVectors
from .registry import LAM, Combined, Param, register


#: The Gram route (below) is taken when the smallest singular value it needs is at least this share
#: of the largest: its float64 error, about 1e-16·(σ_max/σ_min)², then stays under float32's 1.2e-7.
GRAM_MIN_RATIO = 1e-4


def _gram_route(a: torch.Tensor) -> bool:
    """float64 holds twice float32's digits, so squaring a float32 (or narrower) matrix into a float64
    Gram matrix loses nothing a float32 SVD keeps; a float64 matrix would lose half of its own."""
    return a.dtype in (torch.float32, torch.bfloat16, torch.float16)


def _gram_eigen(a: torch.Tensor, p: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool] | None:
    """``a`` in float64 (transposed when wide, so that it is tall), and the eigenvalues λ = σ² (ascending)
    and eigenvectors of its float64 Gram matrix xᵀx, when the Gram route applies to ``a``'s ``p``
    largest singular values: float32-or-narrower input and σ_p ≥ :data:`GRAM_MIN_RATIO`·σ_1.  None
    otherwise (float64 input; a rank-deficient or zero ``a``, where 1/σ is undefined).  The last
    value says whether ``a`` was transposed."""
    if p <= 0 or not _gram_route(a):
        return None
    wide = a.shape[0] < a.shape[1]
    x = a.double().T if wide else a.double()
    lam, vec = torch.linalg.eigh(x.T @ x)  # ascending
    if not float(lam[-p]) >= GRAM_MIN_RATIO ** 2 * float(lam[-1]) > 0:
        return None
    return x, lam, vec, wide


def nearest_orthogonal(a: torch.Tensor) -> torch.Tensor:
    """The orthogonal (semi-orthogonal) matrix closest to ``a`` in Frobenius norm: U Vᵀ of a = U S Vᵀ.

    For float32 input, the polar factor a (aᵀa)^(-1/2) through the float64 Gram matrix of the shorter
    side and a symmetric eigensolver (a GEMM and ``eigh``: 1.5–3× faster than a float32 SVD of the
    CLIP tower's matrices on the CPU, BENCHMARKS.md) whenever ``a`` is well conditioned
    (:data:`GRAM_MIN_RATIO`); the SVD otherwise (rank-deficient ``a``, float64 input).
    """
    gram = _gram_eigen(a, min(a.shape))
    if gram is not None:
        x, lam, vec, wide = gram
        polar = x @ ((vec * lam.rsqrt()) @ vec.T)
        return (polar.T if wide else polar).to(a.dtype)
    u, _, vh = torch.linalg.svd(a, full_matrices=False)
    return u @ vh


def _gram_triplets(x: torch.Tensor, lam: torch.Tensor, vec: torch.Tensor, wide: bool, p: int):
    """The ``p`` largest singular triplets (U, S, V; float64, largest first) from :func:`_gram_eigen`'s
    result: the Gram matrix's top eigenvectors are V (U when ``a`` was wide), σ = √λ, the other side x v / σ."""
    s, right = lam[-p:].flip(0).sqrt(), vec[:, -p:].flip(1)
    left = (x @ right) / s
    return (right, s, left) if wide else (left, s, right)


def top_singular(d: torch.Tensor, p: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``p`` largest singular triplets of ``d`` (m × n): U (m × p), S (p,), V (n × p), as the SVD
    gives them (each pair u_i, v_i up to a common sign).

    For float32 input, through the float64 Gram matrix of the shorter side: its top eigenvectors are V
    (or U), σ = √λ, and the other side is d v / σ.  Taken when σ_p ≥ :data:`GRAM_MIN_RATIO`·σ_1; the
    SVD otherwise (a rank-deficient or zero ``d``, where d v / σ is undefined, and float64 input).
    """
    gram = _gram_eigen(d, p)
    if gram is not None:
        return tuple(t.to(d.dtype) for t in _gram_triplets(*gram, p))
    u, s, vh = torch.linalg.svd(d, full_matrices=False)
    return u[:, :p], s[:p], vh[:p].T


def singular_spectrum(d: torch.Tensor, p: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every singular value of ``d`` (descending) and the singular vectors of its ``p`` largest, all in
    float64: ``(U (m × p), spectrum (min(m, n),), V (n × p))``; ``spectrum[:p]`` are the triplets' σ.

    One ``eigh`` of the float64 Gram matrix serves both for float32 input (as in :func:`top_singular`);
    the small singular values it gives are exact to about √ε₆₄·σ₁ ≈ 1e-8·σ₁, below float32's own
    resolution of the entries.  A float64 SVD otherwise.
    """
    gram = _gram_eigen(d, p)
    if gram is not None:
        u, _, v = _gram_triplets(*gram, p)
        return u, gram[1].flip(0).clamp(min=0).sqrt(), v
    u, s, vh = torch.linalg.svd(d.double(), full_matrices=False)
    return u[:, :p], s, vh[:p].T


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
