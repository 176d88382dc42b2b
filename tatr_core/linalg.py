"""Singular triplets, polar factors and spectra of task matrices, by the fastest route that keeps
float32's accuracy (TSV-M, TSV-C, Iso-C/CTS, CART, the TSV view).

**The route.**  For a float32 (or narrower) matrix ``a`` (m × n), everything comes from the float64
Gram matrix of its shorter side, G = xᵀx (x = a, or aᵀ when a is wide): its eigenvectors are the
right singular vectors, σ = √λ, and the other side is x v / σ.  float64 holds twice float32's digits,
so squaring loses nothing a float32 SVD keeps (σ_p ≥ :data:`GRAM_MIN_RATIO`·σ_1 is required; below
it, a rank-deficient or zero matrix, 1/σ is undefined and the SVD answers).  A float64 matrix always
takes the SVD: its Gram would lose half of its own digits.

A float32 Gram (half the work) is not enough: its rounding, ε₃₂·σ₁², swamps the gaps between the
small singular values of a task matrix's noise floor, and TSV-M merged that way is 6e-4 (relative)
from the float64 SVD's, where this route is 3e-7 (``bench/tsv_speed.py``).

**On the CPU** the Gram is one BLAS ``dsyrk`` (the symmetric product: half the GEMM's work) and,
when only the top p of n triplets are needed and p ≤ :data:`SUBSET_SHARE`·n (TSV-M's ⌊r/K⌋, TSV-C's
5%, Iso-CTS's task blocks), LAPACK's ``syevr`` computes just those (SciPy's ``eigh`` with
``subset_by_index``); otherwise ``torch.linalg.eigh``.  **On CUDA** the Gram is a GEMM and the
eigensolver ``torch.linalg.eigh`` (cuSOLVER ``syevd``) on the device; the SVD fallback uses
``torch.linalg.svd``'s default driver.
"""
from __future__ import annotations

import torch

#: The Gram route is taken when the smallest singular value it needs is at least this share of the
#: largest: its float64 error, about 1e-16·(σ_max/σ_min)², then stays under float32's 1.2e-7.
GRAM_MIN_RATIO = 1e-4
#: On the CPU, a partial eigensolver (LAPACK syevr) when at most this share of the eigenpairs is needed:
#: on a 768 × 768 Gram, the top 96 take 0.09 s against 0.13 s for all of them, the top 300 0.18 s.
SUBSET_SHARE = 0.2


def gram_route(a: torch.Tensor) -> bool:
    """Whether ``a``'s dtype takes the Gram route (float32 or narrower: float64 holds their squares exactly
    enough); a float64 matrix would lose half its digits."""
    return a.dtype in (torch.float32, torch.bfloat16, torch.float16)


def _tall64(a: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``a`` in float64, transposed when wide so that it is tall; and whether it was transposed."""
    wide = a.shape[0] < a.shape[1]
    return (a.double().T if wide else a.double()), wide


def gram64(x: torch.Tensor) -> torch.Tensor:
    """xᵀx of a float64 matrix; on the CPU by BLAS ``dsyrk`` (only the lower triangle is filled, which is
    all the eigensolvers read)."""
    if x.device.type != "cpu":
        return x.T @ x
    from scipy.linalg.blas import dsyrk

    # x.T's memory is x's, read as a Fortran-ordered n × m array: A Aᵀ with A = xᵀ, no copy
    return torch.from_numpy(dsyrk(1.0, x.detach().numpy().T, trans=0, lower=1))


def eigen(g: torch.Tensor, p: int, full: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and eigenvectors of the symmetric ``g`` (lower triangle read): all of them
    (``full``), or at least the top ``p`` (only those when a partial solve is cheaper, on the CPU)."""
    n = g.shape[0]
    if not full and g.device.type == "cpu" and p <= SUBSET_SHARE * n:
        from scipy.linalg import eigh

        lam, vec = eigh(g.numpy(), subset_by_index=[n - p, n - 1], driver="evr", lower=True, check_finite=False,
                        overwrite_a=True)
        return torch.from_numpy(lam), torch.from_numpy(vec)
    return torch.linalg.eigh(g, UPLO="L")


def _gram_eigen(a: torch.Tensor, p: int, full: bool = False):
    """``(x, λ ascending, eigenvectors, wide)`` of ``a``'s float64 Gram matrix, when the Gram route applies
    to ``a``'s ``p`` largest singular values (float32-or-narrower input, σ_p ≥ GRAM_MIN_RATIO·σ_1); None
    otherwise.  ``full``: every eigenpair, else at least the top ``p``."""
    if p <= 0 or not gram_route(a):
        return None
    x, wide = _tall64(a)
    lam, vec = eigen(gram64(x), p, full)
    if not float(lam[-p]) >= GRAM_MIN_RATIO ** 2 * float(lam[-1]) > 0:
        return None
    return x, lam, vec, wide


def _triplets(x: torch.Tensor, lam: torch.Tensor, vec: torch.Tensor, wide: bool, p: int):
    """The ``p`` largest singular triplets (U, S, V; float64, largest first) from :func:`_gram_eigen`'s
    result: the Gram matrix's top eigenvectors are V (U when ``a`` was wide), σ = √λ, the other side x v / σ."""
    s, right = lam[-p:].flip(0).sqrt(), vec[:, -p:].flip(1)
    left = (x @ right) / s
    return (right, s, left) if wide else (left, s, right)


def top_singular(d: torch.Tensor, p: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``p`` largest singular triplets of ``d`` (m × n): U (m × p), S (p,), V (n × p), as the SVD gives
    them (each pair u_i, v_i up to a common sign), in ``d``'s dtype; by the Gram route when it applies."""
    gram = _gram_eigen(d, p)
    if gram is not None:
        return tuple(t.to(d.dtype) for t in _triplets(*gram, p))
    u, s, vh = torch.linalg.svd(d, full_matrices=False)
    return u[:, :p], s[:p], vh[:p].T


def nearest_orthogonal(a: torch.Tensor) -> torch.Tensor:
    """The orthogonal (semi-orthogonal) matrix closest to ``a`` in Frobenius norm: U Vᵀ of a = U S Vᵀ;
    for float32 input the polar factor x (xᵀx)^(-1/2) through the float64 Gram matrix of the shorter side
    whenever ``a`` is well conditioned (:data:`GRAM_MIN_RATIO`), the SVD's otherwise."""
    gram = _gram_eigen(a, min(a.shape), full=True)
    if gram is not None:
        x, lam, vec, wide = gram
        polar = x @ ((vec * lam.rsqrt()) @ vec.T)
        return (polar.T if wide else polar).to(a.dtype)
    u, _, vh = torch.linalg.svd(a, full_matrices=False)
    return u @ vh


def singular_spectrum(d: torch.Tensor, p: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every singular value of ``d`` (descending) and the singular vectors of its ``p`` largest, in float64:
    ``(U (m × p), spectrum (min(m, n),), V (n × p))``.  One full ``eigh`` of the float64 Gram serves both
    for float32 input (its small singular values are exact to about √ε₆₄·σ₁ ≈ 1e-8·σ₁, below float32's
    resolution of the entries); a float64 SVD otherwise."""
    gram = _gram_eigen(d, p, full=True)
    if gram is not None:
        u, _, v = _triplets(*gram, p)
        return u, gram[1].flip(0).clamp(min=0).sqrt(), v
    u, s, vh = torch.linalg.svd(d.double(), full_matrices=False)
    return u[:, :p], s, vh[:p].T
