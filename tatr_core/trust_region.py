"""The trust region of TATR: sensitivity Ω (Eq. 8 and the Table 6 variants) and the top-τ mask (Eq. 9).

Sensitivity variants, for K task vectors Δ_k, absolute mean gradients G_k = E|∇L_k| (Eq. 6)
and signed mean gradients g_k = E∇L_k, all at θ_pre:

=============  =====================================  ==========================================
variant        Ω = Σ_{i≠j} ...                        computed in O(K·N) as
=============  =====================================  ==========================================
gradient       G_j ⊙ |Δ_i|            (Eq. 8)         (Σ_j G_j) ⊙ (Σ_i |Δ_i|) − Σ_k G_k ⊙ |Δ_k|
zero-shot      |Δ_j| ⊙ |Δ_i|          (Eq. 7)         (Σ_k |Δ_k|)² − Σ_k |Δ_k|²
ntk            G_j ⊙ G_i                              (Σ_k G_k)² − Σ_k G_k²
positive       g_j ⊙ Δ_i              (signed)        (Σ_j g_j) ⊙ (Σ_i Δ_i) − Σ_k g_k ⊙ Δ_k
negative       −g_j ⊙ Δ_i                             −(positive)
=============  =====================================  ==========================================

The paper's 1/(K(K−1)) factor does not change the ranking; ``normalize=True`` applies it.

The trust region of the non-negative variants (Eq. 9) excludes the τ fraction of the N
dimensions with the largest Ω, ranked globally over all merged tensors: exactly ⌊τN⌋ of them,
ties broken by the lower flat index.  A dimension with Ω = 0 carries no conflict and is never
excluded (so with one task, where Ω ≡ 0, TATR is Task Arithmetic).

The signed variants do what Appendix C.4 says of them: ``positive`` "promotes the merging of the
components … that align with the gradient's ascent direction", ``negative`` those along the
descent direction.  Their Ω is not a conflict to exclude but the direction to promote, so the
merge keeps exactly the dimensions where Ω > 0 (for ``positive``, where Σ_{i≠j} g_j ⊙ Δ_i > 0: the
summed task vectors raise the other tasks' losses to first order) and drops the rest.  These are
the merged models θ^pos_TATR and θ^neg_TATR of Figure 2(a).  The selection is by sign, not by rank:
any τ > 0 switches it on and its size does not grade it; τ = 0 is Task Arithmetic, as for every
variant.  (Excluding the top-τ of the signed Ω instead would keep the opposite components.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .errors import TatrError

#: Columns processed at a time: K×CHUNK temporaries stay small and cache-friendly.
CHUNK = 1 << 20


@dataclass(frozen=True)
class Sensitivity:
    name: str
    needs: str  # "grads", "signed_grads" or "" (zero-shot)
    nonnegative: bool
    formula: str  # LaTeX, for pages and tables
    summary: str


SENSITIVITIES: dict[str, Sensitivity] = {
    s.name: s
    for s in (
        Sensitivity("gradient", "grads", True,
                    r"\sum_{i\neq j} \mathbb{E}_x\big|\nabla_\theta \ell_j(\theta_{pre}; x)\big| \odot |\Delta_i|",
                    "TATR (Eq. 8): the mean of each exemplar's absolute gradient, times other tasks' |Δ|"),
        Sensitivity("zero-shot", "", True, r"\sum_{i\neq j} |\Delta_j| \odot |\Delta_i|",
                    "TATR zero-shot (Eq. 7): |Δ_j| stands in for the gradient; needs no data"),
        Sensitivity("ntk", "grads", True,
                    r"\sum_{i\neq j} \mathbb{E}_x\big|\nabla_\theta \ell_j\big| \odot \mathbb{E}_x\big|\nabla_\theta \ell_i\big|",
                    "TATR ntk (Table 6): products of two tasks' mean absolute gradients"),
        Sensitivity("positive", "signed_grads", False,
                    r"\sum_{i\neq j} \mathbb{E}_x\nabla_\theta \ell_j(\theta_{pre}; x) \odot \Delta_i",
                    "TATR positive (Table 6, C.4): merge only the dimensions where the task vectors go up the "
                    "other tasks' gradients (Ω > 0)"),
        Sensitivity("negative", "signed_grads", False,
                    r"-\sum_{i\neq j} \mathbb{E}_x\nabla_\theta \ell_j(\theta_{pre}; x) \odot \Delta_i",
                    "TATR negative (Table 6, C.4): merge only the dimensions where the task vectors go down the "
                    "other tasks' gradients"),
    )
}


def sensitivity_spec(variant: str) -> Sensitivity:
    """The declaration of a sensitivity variant, or a :class:`TatrError` listing the variants."""
    if variant not in SENSITIVITIES:
        raise TatrError(f"unknown sensitivity '{variant}'; choose one of {', '.join(SENSITIVITIES)}")
    return SENSITIVITIES[variant]


def _chunked(out: torch.Tensor, fn: Callable[[slice], torch.Tensor], n: int, chunk: int | None = None) -> torch.Tensor:
    chunk = chunk or CHUNK
    for start in range(0, n, chunk):
        sl = slice(start, min(start + chunk, n))
        out[sl] = fn(sl)
    return out


def sensitivity(
    deltas: torch.Tensor,
    variant: str = "gradient",
    grads: torch.Tensor | None = None,
    signed_grads: torch.Tensor | None = None,
    normalize: bool = False,
) -> torch.Tensor:
    """Ω for every dimension, ``(N,)``, from ``deltas`` ``(K, N)`` and per-task gradients ``(K, N)``.

    O(K·N) time and O(N) extra memory: the K² pairwise sum is rewritten as
    (Σ a)(Σ b) − Σ a⊙b.  Ω is computed on the device of ``deltas``; gradients on another device
    (host memory, when they do not fit on the GPU) are streamed there in column blocks.
    """
    spec = sensitivity_spec(variant)
    K, N = deltas.shape
    aux = {"grads": grads, "signed_grads": signed_grads, "": None}[spec.needs]
    if spec.needs and aux is None:
        flag = "--grads" if spec.needs == "grads" else "--signed-grads"
        raise TatrError(f"sensitivity '{variant}' needs per-task {spec.needs.replace('_', ' ')} ({flag}); "
                        "compute them with 'python -m tatr_core grads' or use --sensitivity zero-shot")
    if aux is not None and tuple(aux.shape) != (K, N):
        raise TatrError(f"{spec.needs.replace('_', ' ')} have shape {tuple(aux.shape)}, expected ({K}, {N})")

    def block(sl: slice) -> torch.Tensor:
        d = deltas[:, sl]
        # gradients kept in host memory (too large for the device) stream to it one block at a time
        g = aux[:, sl].to(deltas.device, non_blocking=True) if aux is not None else None
        if variant == "gradient":
            a, b = g, d.abs()
        elif variant == "zero-shot":
            a = b = d.abs()
        elif variant == "ntk":
            a = b = g
        else:  # positive / negative
            a, b = g, d
        omega = a.sum(0) * b.sum(0) - (a * b).sum(0)
        if spec.nonnegative:
            omega.clamp_(min=0)  # exact value is ≥ 0; remove rounding noise of the subtraction
        return -omega if variant == "negative" else omega

    omega = _chunked(torch.empty(N, dtype=deltas.dtype, device=deltas.device), block, N)  # where the data lives
    if normalize and K > 1:
        omega /= K * (K - 1)
    return omega


def count_for_fraction(fraction: float, n: int) -> int:
    """⌊fraction·n⌋, robust to binary rounding (0.29·100 is 28.999…; this gives 29)."""
    return min(n, int(math.floor(round(fraction * n, 6))))


def selection_method(device: torch.device) -> str:
    """How :func:`kth_smallest` selects on ``device``: ``"kthvalue"`` on the CPU, ``"topk"`` elsewhere.

    On the CPU ``kthvalue`` is a linear-time selection (1.2 s for 87.8M values against 1.7 s for
    ``topk``, BENCHMARKS.md).  On CUDA it runs one thread block per slice, so one flat slice of all
    N values would be a single multiprocessor's work; ``topk`` spreads a large slice over the whole
    device, and is what the issue's 13 ms fused CUDA pass used.
    """
    return "kthvalue" if device.type == "cpu" else "topk"


def kth_smallest(values: torch.Tensor, k: int, method: str | None = None) -> torch.Tensor:
    """The ``k``-th smallest entry (1-based) of ``values``, exactly, for any length, as a 0-d tensor
    on ``values``' device (no ``torch.quantile``, which refuses more than 16M elements; no full sort).

    ``method`` (default: :func:`selection_method` of the device) is ``"kthvalue"`` or ``"topk"``;
    ``"topk"`` takes the smaller side, so it holds at most N/2 values and their indices.
    """
    values = values.reshape(-1)
    n = values.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k = {k} is outside 1..{n}")
    method = method or selection_method(values.device)
    if method == "kthvalue":
        return torch.kthvalue(values, k).values
    if method != "topk":
        raise ValueError(f"unknown selection method {method!r}")
    if k <= n - k + 1:
        return torch.topk(values, k, largest=False, sorted=False).values.max()
    return torch.topk(values, n - k + 1, largest=True, sorted=False).values.min()


def top_k_mask(values: torch.Tensor, k: int, method: str | None = None) -> torch.Tensor:
    """Boolean mask with exactly ``k`` True entries at the largest ``values``.

    Exact for any length: the k-th largest value is an order statistic (:func:`kth_smallest`);
    entries above it are taken, then entries equal to it in increasing index order.
    """
    values = values.reshape(-1)
    n = values.numel()
    if k <= 0:
        return torch.zeros(n, dtype=torch.bool, device=values.device)
    if k >= n:
        return torch.ones(n, dtype=torch.bool, device=values.device)
    threshold = kth_smallest(values, n - k + 1, method)
    mask = values > threshold
    need = k - int(mask.sum())
    if need > 0:
        ties = torch.nonzero(values == threshold).squeeze(1)[:need]
        mask[ties] = True
    return mask


@dataclass
class TrustRegion:
    """Result of Eq. 9: ``keep`` is True inside the trust region; None means nothing excluded."""

    keep: torch.Tensor | None
    excluded: int
    n: int
    tau: float
    variant: str

    @property
    def excluded_fraction(self) -> float:
        return self.excluded / self.n if self.n else 0.0


def check_tau(tau: float) -> float:
    try:
        tau = float(tau)
    except (TypeError, ValueError):
        raise TatrError(f"τ must be a number in [0, 1), got {tau!r}") from None
    if not math.isfinite(tau) or not 0.0 <= tau < 1.0:
        raise TatrError(f"τ must be a fraction in [0, 1) (0.01 excludes 1% of the dimensions), got {tau}")
    return tau


def trust_region(omega: torch.Tensor, tau: float, variant: str = "gradient") -> TrustRegion:
    """Exclude the top-τ fraction of Ω (Eq. 9) and return the mask of the trust region; for the
    signed variants (τ > 0), keep exactly the dimensions with Ω > 0 (Appendix C.4)."""
    tau = check_tau(tau)
    n = omega.numel()
    if not sensitivity_spec(variant).nonnegative:
        if tau == 0:
            return TrustRegion(None, 0, n, tau, variant)
        keep = omega.reshape(-1) > 0
        excluded = n - int(keep.sum())
        return TrustRegion(keep if excluded else None, excluded, n, tau, variant)
    k = min(count_for_fraction(tau, n), int((omega > 0).sum()))  # Ω = 0 conflicts with nothing: never excluded
    if k == 0:
        return TrustRegion(None, 0, n, tau, variant)
    excluded = top_k_mask(omega, k)
    return TrustRegion(~excluded, k, n, tau, variant)
