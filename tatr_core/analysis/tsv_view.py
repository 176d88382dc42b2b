"""The TSV view: singular-value spectra of per-layer task matrices and the interference between tasks.

For each 2-D tensor ΔW_k = U_k Σ_k V_kᵀ.  The spectrum of task k in a layer is Σ_k (normalised
by its largest value, so layers compare).  Following Task Singular Vectors (Gargiulo et al.),
the singular task interference of tasks i and j in a layer is
‖(UᵀU − I) Σ (VᵀV − I)‖₁ with U = [U_i U_j], Σ = diag(Σ_i, Σ_j), V = [V_i V_j], each truncated
to its first ``rank`` triplets; 0 when the two tasks' singular vectors are orthogonal.
``interference`` is its mean over the layers.
"""
from __future__ import annotations

import torch

from ..errors import TatrError
from ..keys import Spec
from ..linalg import singular_spectrum
from ..vectors import TaskVectors
from ..zoo import Progress, Zoo, no_progress
from .registry import Context, has_keys, register, run


def singular_task_interference(a: tuple, b: tuple) -> float:
    """‖(UᵀU − I) Σ (VᵀV − I)‖₁ for two tasks' truncated SVDs ``(U, σ, V)``."""
    (ua, sa, va), (ub, sb, vb) = a, b
    u = torch.cat([ua, ub], 1)
    v = torch.cat([va, vb], 1)
    s = torch.cat([sa, sb])
    eye = torch.eye(u.shape[1], dtype=u.dtype, device=u.device)
    return float(((((u.T @ u) - eye) * s) @ ((v.T @ v) - eye)).abs().sum())


def pairwise_interference(svds: list[tuple]) -> torch.Tensor:
    """The K × K matrix of :func:`singular_task_interference` over every pair of tasks (0 on the diagonal),
    from one Gram matrix of all K tasks' stacked U and one of their V: every pair's UᵀU and VᵀV are
    blocks of those, so the layer costs two GEMMs instead of K(K − 1)/2 pairs of them."""
    us, ss, vs = zip(*svds)
    sizes = [s.numel() for s in ss]
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    u, s, v = torch.cat(us, 1), torch.cat(ss), torch.cat(vs, 1)
    eye = torch.eye(u.shape[1], dtype=u.dtype, device=u.device)
    gu, gv = u.T @ u - eye, v.T @ v - eye
    out = torch.zeros(len(svds), len(svds), dtype=torch.float64, device=u.device)  # one copy to the host at the end
    for i in range(len(svds)):
        for j in range(i + 1, len(svds)):
            idx = torch.cat([torch.arange(starts[i], starts[i] + sizes[i], device=u.device),
                             torch.arange(starts[j], starts[j] + sizes[j], device=u.device)])
            a, b = gu[idx][:, idx], gv[idx][:, idx]
            out[i, j] = out[j, i] = ((a * s[idx]) @ b).abs().sum()
    return out.cpu()


def task_singular_view(tv: TaskVectors, names: list[str], rank_fraction: float = 0.1,
                       progress: Progress = no_progress) -> dict:
    """The TSV view's record for task vectors ``tv`` (see :func:`tsv_view`), computed where ``tv`` lives."""
    layers = [(k, sl, shape) for k, sl, shape in tv.layout.items() if len(shape) == 2]
    spectra, per_layer = {}, {}
    total = torch.zeros(tv.K, tv.K, dtype=torch.float64)
    for n, (key, sl, shape) in enumerate(layers):
        progress(n / len(layers), f"singular values of {key} ({n + 1}/{len(layers)})")
        rank = max(1, int(rank_fraction * min(shape)))
        svds, spectra[key] = [], {}
        for k, t in enumerate(names):
            u, spectrum, v = singular_spectrum(tv.deltas[k, sl].view(shape), rank)
            spectra[key][t] = (spectrum / spectrum[0].clamp(min=1e-30)).tolist()
            svds.append((u, spectrum[:rank], v))
        m = pairwise_interference(svds)
        per_layer[key] = m.tolist()
        total += m
    progress(1.0, "TSV view done")
    return {"tasks": list(names), "layers": [k for k, _, _ in layers], "rank_fraction": rank_fraction,
            "spectra": spectra, "per_layer": per_layer, "interference": (total / max(1, len(layers))).tolist()}


def tsv_spec(zoo: Zoo, rank_fraction: float = 0.1) -> Spec:
    """The spec of :func:`tsv_view`."""
    if not 0 < rank_fraction <= 1:
        raise TatrError(f"rank_fraction must lie in (0, 1], got {rank_fraction}: it is the share of each "
                        "matrix's singular triplets the interference keeps (TSV uses 0.1)")
    return Spec.of("tsv", zoo.key, {"rank_fraction": float(rank_fraction)})


def tsv_view(zoo: Zoo, rank_fraction: float = 0.1, progress: Progress = no_progress, use_cache: bool = True) -> dict:
    """``{"layers", "spectra": {layer: {task: [σ/σ_max]}}, "interference": K×K, "per_layer": {layer: K×K}}``."""
    return run(zoo, tsv_spec(zoo, rank_fraction), progress=progress, use_cache=use_cache)


@register("tsv", "task singular vectors", has_keys("tasks", "layers", "spectra", "interference", "per_layer"),
          lambda args: "Task singular vectors: SVD of every task matrix")
def _tsv(zoo: Zoo, args: dict, ctx: Context) -> dict:
    return task_singular_view(zoo.task_vectors, zoo.task_names, args["rank_fraction"], ctx.progress)
