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

from ..cache import cache_dir, digest, honours_no_cache, lookup_json, write_json_atomic
from ..zoo import Progress, Zoo, no_progress


def singular_task_interference(a: tuple, b: tuple) -> float:
    """‖(UᵀU − I) Σ (VᵀV − I)‖₁ for two tasks' truncated SVDs ``(U, σ, V)``."""
    (ua, sa, va), (ub, sb, vb) = a, b
    u = torch.cat([ua, ub], 1)
    v = torch.cat([va, vb], 1)
    s = torch.cat([sa, sb])
    eye = torch.eye(u.shape[1], dtype=u.dtype, device=u.device)
    return float(((((u.T @ u) - eye) * s) @ ((v.T @ v) - eye)).abs().sum())


@honours_no_cache
def tsv_view(zoo: Zoo, rank_fraction: float = 0.1, progress: Progress = no_progress, use_cache: bool = True) -> dict:
    """``{"layers", "spectra": {layer: {task: [σ/σ_max]}}, "interference": K×K, "per_layer": {layer: K×K}}``."""
    key = digest({"zoo": zoo.key, "rank_fraction": rank_fraction})
    path = cache_dir("results", zoo.key) / f"tsv-{key}.json"
    if use_cache and (cached := lookup_json(path)) is not None:
        return cached
    tv = zoo.task_vectors
    names = zoo.task_names
    layers = [(k, sl, shape) for k, sl, shape in tv.layout.items() if len(shape) == 2]
    spectra, per_layer = {}, {}
    total = torch.zeros(tv.K, tv.K, dtype=torch.float64)
    for n, (key_, sl, shape) in enumerate(layers):
        progress(n / len(layers), f"SVD of {key_}")
        rank = max(1, int(rank_fraction * min(shape)))
        svds = []
        spectra[key_] = {}
        for k, t in enumerate(names):
            u, s, vh = torch.linalg.svd(tv.deltas[k, sl].view(shape).double(), full_matrices=False)
            spectra[key_][t] = (s / s[0].clamp(min=1e-30)).tolist()
            svds.append((u[:, :rank], s[:rank], vh[:rank].T))
        m = torch.zeros(tv.K, tv.K, dtype=torch.float64)
        for i in range(tv.K):
            for j in range(i + 1, tv.K):
                m[i, j] = m[j, i] = singular_task_interference(svds[i], svds[j])
        per_layer[key_] = m.tolist()
        total += m
    record = {"tasks": names, "layers": [k for k, _, _ in layers], "rank_fraction": rank_fraction,
              "spectra": spectra, "per_layer": per_layer, "interference": (total / max(1, len(layers))).tolist()}
    if use_cache:
        write_json_atomic(path, record)
    progress(1.0, "TSV view done")
    return record
