"""Slow, obviously-correct reference implementations, written straight from the paper's
formulas with explicit loops, for small float64 tensors.  The tests compare the fast
library code against these."""
from __future__ import annotations

import torch


def flat(sd: dict, keys) -> torch.Tensor:
    return torch.cat([sd[k].reshape(-1) for k in keys])


def sensitivity(deltas: list[torch.Tensor], variant: str, grads=None, signed=None) -> torch.Tensor:
    """Ω[n] = Σ_{i≠j} term(j, i)[n] with an explicit double loop over task pairs."""
    K, N = len(deltas), deltas[0].numel()
    omega = torch.zeros(N, dtype=torch.float64)
    for j in range(K):
        for i in range(K):
            if i == j:
                continue
            if variant == "gradient":
                term = grads[j].abs() * deltas[i].abs()
            elif variant == "zero-shot":
                term = deltas[j].abs() * deltas[i].abs()
            elif variant == "ntk":
                term = grads[j].abs() * grads[i].abs()
            elif variant == "positive":
                term = signed[j] * deltas[i]
            elif variant == "negative":
                term = -(signed[j] * deltas[i])
            omega += term
    return omega


def excluded_set(omega: torch.Tensor, tau: float, nonnegative: bool) -> set[int]:
    """Indices of the ⌊τN⌋ largest Ω by a full sort (value descending, index ascending); for a
    signed variant (Appendix C.4: merge what its Ω promotes) every index with Ω ≤ 0 when τ > 0."""
    N = omega.numel()
    if not nonnegative:
        return {n for n in range(N) if float(omega[n]) <= 0} if tau > 0 else set()
    k = int(round(tau * N, 6) // 1)
    order = sorted(range(N), key=lambda n: (-float(omega[n]), n))
    chosen = order[:k]
    if nonnegative:
        chosen = [n for n in chosen if float(omega[n]) > 0]
    return set(chosen)


def task_arithmetic(pre: dict, fts: list[dict], lam: float, keep: torch.Tensor | None = None, keys=None) -> dict:
    keys = keys or list(pre)
    out, off = {}, 0
    for key in keys:
        total = torch.zeros_like(pre[key])
        for ft in fts:
            total = total + (ft[key] - pre[key])
        if keep is not None:
            n = pre[key].numel()
            total = total * keep[off: off + n].view_as(total)
            off += n
        out[key] = pre[key] + lam * total
    return out


def average(pre: dict, fts: list[dict]) -> dict:
    return {k: sum(ft[k] for ft in fts) / len(fts) for k in pre}


def ties(pre: dict, fts: list[dict], density: float, lam: float, merge_func: str = "sum") -> dict:
    keys, deltas = _flat_deltas(pre, fts)
    return _unflat(pre, keys, flat(pre, keys) + lam * _ties_flat(deltas, density, merge_func))


def tsv(pre: dict, fts: list[dict], lam: float) -> dict:
    """TSV-M written as in the authors' description: zero-padded (m × r) blocks, then polar factors."""
    out = {}
    K = len(fts)
    for key in pre:
        deltas = [ft[key] - pre[key] for ft in fts]
        if pre[key].ndim != 2:
            out[key] = pre[key] + lam * sum(deltas) / K
            continue
        m, n = pre[key].shape
        r = min(m, n)
        s = r // K
        sum_u = torch.zeros(m, r, dtype=torch.float64)
        sum_s = torch.zeros(r, dtype=torch.float64)
        sum_v = torch.zeros(r, n, dtype=torch.float64)
        for i, d in enumerate(deltas):
            u, sv, vh = torch.linalg.svd(d, full_matrices=False)
            sum_u[:, i * s:(i + 1) * s] = u[:, :s]
            sum_s[i * s:(i + 1) * s] = sv[:s]
            sum_v[i * s:(i + 1) * s, :] = vh[:s, :]
        uu, _, uvh = torch.linalg.svd(sum_u, full_matrices=False)
        vu, _, vvh = torch.linalg.svd(sum_v, full_matrices=False)
        merged = uu @ uvh @ torch.diag(sum_s) @ vu @ vvh
        out[key] = pre[key] + lam * merged
    return out


# ----------------------------------------------------------------------------- the six baselines (issue 15)
def _unflat(pre: dict, keys, theta: torch.Tensor) -> dict:
    out, off = {}, 0
    for key in keys:
        n = pre[key].numel()
        out[key] = theta[off: off + n].view_as(pre[key])
        off += n
    return out


def _ties_flat(deltas: list[torch.Tensor], density: float, merge_func: str = "sum") -> torch.Tensor:
    """TIES' trim / elect / disjoint sum (or mean) on flat vectors, entry by entry."""
    N = deltas[0].numel()
    k = int(round(density * N, 6) // 1)
    trimmed = []
    for d in deltas:
        order = sorted(range(N), key=lambda n: (-abs(float(d[n])), n))
        t = torch.zeros(N, dtype=torch.float64)
        for n in order[:k]:
            t[n] = d[n]
        trimmed.append(t)
    merged = torch.zeros(N, dtype=torch.float64)
    for n in range(N):
        values = [float(t[n]) for t in trimmed]
        total = sum(values)
        sign = (total > 0) - (total < 0)
        agreeing = [v for v in values if v != 0 and ((v > 0) - (v < 0)) == sign]
        if agreeing:
            merged[n] = sum(agreeing) / (len(agreeing) if merge_func == "mean" else 1)
    return merged


def _flat_deltas(pre: dict, fts: list[dict]):
    keys = [k for k, v in pre.items() if v.is_floating_point()]
    return keys, [flat(ft, keys) - flat(pre, keys) for ft in fts]


def dare(pre: dict, fts: list[dict], p: float, lam: float, base: str, density: float, keeps: list,
         merge_func: str = "sum") -> dict:
    """Drop where ``keeps[k]`` is False, survivors × 1/(1−p), then Task Arithmetic or TIES."""
    keys, deltas = _flat_deltas(pre, fts)
    processed = []
    for d, keep in zip(deltas, keeps):
        out = torch.zeros_like(d)
        for n in range(d.numel()):
            if bool(keep[n]):
                out[n] = d[n] / (1.0 - p)
        processed.append(out)
    merged = _ties_flat(processed, density, merge_func) if base == "ties" else sum(processed)
    return _unflat(pre, keys, flat(pre, keys) + lam * merged)


def consensus(pre: dict, fts: list[dict], tall_lambda: float, min_tasks: int, lam: float) -> dict:
    keys, deltas = _flat_deltas(pre, fts)
    K, N = len(deltas), deltas[0].numel()
    merged = torch.zeros(N, dtype=torch.float64)
    for n in range(N):
        mtl = sum(float(d[n]) for d in deltas)
        claims = sum(1 for d in deltas if abs(float(d[n])) >= tall_lambda * abs(mtl - float(d[n])))
        merged[n] = mtl if claims >= min_tasks else 0.0  # k > K: nothing is claimed often enough (θ_pre)
    return _unflat(pre, keys, flat(pre, keys) + lam * merged)


def magmax(pre: dict, fts: list[dict], lam: float) -> dict:
    keys, deltas = _flat_deltas(pre, fts)
    merged = torch.zeros(deltas[0].numel(), dtype=torch.float64)
    for n in range(merged.numel()):
        best = deltas[0][n]
        for d in deltas[1:]:  # as large or larger: among equal magnitudes the last task wins
            if abs(float(d[n])) >= abs(float(best)):
                best = d[n]
        merged[n] = best
    return _unflat(pre, keys, flat(pre, keys) + lam * merged)


def pcb(pre: dict, fts: list[dict], keep: float, lam: float, variant: str = "released", outlier: float = 1e-4) -> dict:
    """PCB's steps with full sorts and explicit normalisations: the released PCB_merge (agreement with the
    sum of the task vectors) or the vision scripts (agreement with the sum of their signed, normalised,
    clamped magnitudes)."""
    keys, deltas = _flat_deltas(pre, fts)
    K, N = len(deltas), deltas[0].numel()

    def minmax(x):
        lo, hi = float(x.min()), float(x.max())
        return (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)

    def clamp(d):
        a = d.abs()
        s = torch.sort(a).values
        return torch.minimum(torch.maximum(a, s[int(N * outlier)]), s[int(N * (1 - outlier)) - 1])

    total = sum(deltas) if variant == "released" else sum(torch.sign(d) * minmax(clamp(d)) for d in deltas)
    weights, clamped = [], []
    for d in deltas:
        a = clamp(d)
        clamped.append(torch.sign(d) * a)
        beta = torch.exp(K * minmax(a) ** 2) * torch.tanh(d * total)
        threshold = torch.sort(beta).values[int(N * (1 - keep))]
        weights.append(minmax(torch.maximum(beta, threshold)))
    merged = torch.zeros(N, dtype=torch.float64)
    for n in range(N):
        den = sum(float(w[n]) for w in weights)
        merged[n] = sum(float(w[n]) * float(c[n]) for w, c in zip(weights, clamped)) / max(den, 1e-12)
    return _unflat(pre, keys, flat(pre, keys) + lam * merged)


def _inverse_sqrt(gram: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(gram)
    return vectors @ torch.diag(values.rsqrt()) @ vectors.T


def _polar(a: torch.Tensor) -> torch.Tensor:
    """The orthogonal polar factor A (AᵀA)^{-1/2} (or (AAᵀ)^{-1/2} A for a wide A), without an SVD."""
    return a @ _inverse_sqrt(a.T @ a) if a.shape[0] >= a.shape[1] else _inverse_sqrt(a @ a.T) @ a


def _top_singular(a: torch.Tensor, k: int):
    """Top-k singular triplets from the eigenvectors of A Aᵀ (v = Aᵀu / σ), not from an SVD."""
    values, vectors = torch.linalg.eigh(a @ a.T)
    order = torch.argsort(values, descending=True)[:k]
    sigma = values[order].clamp_min(0).sqrt()
    u = vectors[:, order]
    return u, sigma, (a.T @ u / sigma).T


def iso(pre: dict, fts: list[dict], lam: float, common_fraction: float | None) -> dict:
    """Iso-C (``common_fraction`` None) or Iso-CTS, matrix by matrix; other tensors averaged."""
    out = {}
    K = len(fts)
    for key, value in pre.items():
        if not value.is_floating_point():
            continue
        deltas = [ft[key] - value for ft in fts]
        if value.ndim != 2:
            out[key] = value + lam * sum(deltas) / K
            continue
        total = sum(deltas)
        r = min(total.shape)
        if common_fraction is None:
            u, sigma, vh = _top_singular(total, r)
            out[key] = value + lam * sigma.mean() * _polar(u) @ _polar(vh)
            continue
        common = int(r * common_fraction)
        per_task = round((r - common) / K)
        common = r - per_task * K
        u, sigma, vh = _top_singular(total, common)
        us, sigmas, vs = [u], [sigma], [vh]
        for d in deltas:
            if per_task:
                residual = d - u @ (u.T @ d)
                tu, ts, tv = _top_singular(residual, per_task)
                us.append(tu)
                sigmas.append(ts)
                vs.append(tv)
        left, right = _polar(torch.cat(us, 1)), _polar(torch.cat(vs, 0))
        out[key] = value + lam * torch.cat(sigmas).mean() * left @ right
    return out


def tsv_view(pre: dict, fts: list[dict], rank_fraction: float) -> tuple[dict, dict]:
    """The TSV view straight from its definition: a full float64 SVD of every task's matrix in every
    2-D tensor, and the interference of every pair of tasks from its own concatenated U, Σ, V.
    Returns ``({layer: [spectrum / σ₁ per task]}, {layer: K × K interference})``."""
    spectra, interference = {}, {}
    K = len(fts)
    for key, w in pre.items():
        if w.dim() != 2:
            continue
        rank = max(1, int(rank_fraction * min(w.shape)))
        svds = []
        spectra[key] = []
        for ft in fts:
            u, s, vh = torch.linalg.svd((ft[key] - w).double(), full_matrices=False)
            spectra[key].append(s / s[0])
            svds.append((u[:, :rank], s[:rank], vh[:rank].T))
        m = torch.zeros(K, K, dtype=torch.float64)
        for i in range(K):
            for j in range(K):
                if i == j:
                    continue
                u = torch.cat([svds[i][0], svds[j][0]], 1)
                v = torch.cat([svds[i][2], svds[j][2]], 1)
                sigma = torch.diag(torch.cat([svds[i][1], svds[j][1]]))
                eye = torch.eye(2 * rank, dtype=torch.float64)
                m[i, j] = ((u.T @ u - eye) @ sigma @ (v.T @ v - eye)).abs().sum()
        interference[key] = m
    return spectra, interference


def model_stock(pre: dict, fts: list[dict]) -> dict:
    """Per tensor: the mean of the pairwise angles (degrees, as the released code averages them) between
    the task vectors, t = K cos / ((K − 1) cos + 1), θ = θ_pre + t · mean(Δ); one model: itself."""
    import math

    K = len(fts)
    out = {}
    for key in pre:
        ds = [(ft[key] - pre[key]).reshape(-1) for ft in fts]
        if K < 2:
            t = 1.0
        else:
            angles = []
            for i in range(K):
                for j in range(i + 1, K):
                    cos = float(ds[i] @ ds[j]) / (math.sqrt(float(ds[i] @ ds[i]) * float(ds[j] @ ds[j])) + 1e-8)
                    angles.append(math.degrees(math.acos(max(-1.0, min(1.0, cos)))))
            cos = math.cos(math.radians(sum(angles) / len(angles)))
            t = K * cos / ((K - 1) * cos + 1 + 1e-8)
        out[key] = pre[key] + t * sum(ft[key] - pre[key] for ft in fts) / K
    return out


def _svd_low_rank(a: torch.Tensor, r: int) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    return u[:, :r] @ torch.diag(s[:r]) @ vh[:r]


def cart(pre: dict, fts: list[dict], rank_ratio: float, cart_lambda: float) -> dict:
    """θ = θ̄ + λ Σ_k SVD_r(θ_k − θ̄) per matrix (full SVDs), the average θ̄ elsewhere."""
    K = len(fts)
    out = {}
    for key in pre:
        avg = sum(ft[key] for ft in fts) / K
        if pre[key].dim() == 2:
            r = max(1, int(rank_ratio * min(pre[key].shape)))
            out[key] = avg + cart_lambda * sum(_svd_low_rank(ft[key] - avg, r) for ft in fts)
        else:
            out[key] = avg
    return out


def wudi(pre: dict, fts: list[dict], steps: int, lr: float) -> dict:
    """The released loop: per matrix, Adam on Σ_k ‖(τ_m − τ_k) τ_kᵀ‖² / ‖τ_k‖² through autograd, the
    batched products formed as written; the mean of the task vectors elsewhere."""
    K = len(fts)
    out = {}
    for key in pre:
        taus = torch.stack([ft[key] - pre[key] for ft in fts])
        if pre[key].dim() != 2:
            out[key] = pre[key] + taus.sum(0) / K
            continue
        param = torch.nn.Parameter(taus.sum(0).clone())
        opt = torch.optim.Adam([param], lr=lr, weight_decay=0)
        norms = taus.reshape(K, -1).norm(dim=-1) ** 2
        for _ in range(steps):
            product = (param.unsqueeze(0) - taus) @ taus.transpose(1, 2)
            loss = (product.pow(2) / norms[:, None, None]).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        out[key] = pre[key] + param.detach()
    return out


def emr(pre: dict, fts: list[dict]) -> tuple[dict, list[dict]]:
    """Elect, mask, rescale with explicit loops: (θ_pre + τ_uni, [each task's model])."""
    keys = list(pre)
    K = len(fts)
    unified, masks = {}, [dict() for _ in range(K)]
    for key in keys:
        taus = [ft[key] - pre[key] for ft in fts]
        flag = torch.sign(sum(taus))
        best = torch.zeros_like(pre[key])
        for k, t in enumerate(taus):
            masks[k][key] = (t * flag) > 0
            best = torch.maximum(best, (t * masks[k][key]).abs())
        unified[key] = best * flag
    models = []
    for k in range(K):
        own = sum(float((fts[k][key] - pre[key]).abs().mean()) for key in keys)
        masked = sum(float((unified[key] * masks[k][key]).abs().mean()) for key in keys)
        scale = own / masked
        models.append({key: pre[key] + scale * unified[key] * masks[k][key] for key in keys})
    return {key: pre[key] + unified[key] for key in keys}, models


def tsv_c(pre: dict, fts: list[dict], fraction: float) -> list[dict]:
    """Each task's model with its matrices replaced by their top ⌊f·r⌋ triplets (full SVDs)."""
    out = []
    for ft in fts:
        model = {}
        for key in pre:
            d = ft[key] - pre[key]
            if d.dim() == 2:
                d = _svd_low_rank(d, max(1, int(fraction * min(d.shape))))
            model[key] = pre[key] + d
        out.append(model)
    return out


def lines(pre: dict, merged: dict, fts: list[dict], beta: float) -> dict:
    """LiNeS on a merged model's task vector: block l of L scaled by α + β l/(L − 1), the rest by α, with
    α = ‖Σ_k Δ_k‖ / (K ‖merged − θ_pre‖) (norms over every parameter)."""
    import re

    K = len(fts)
    m = {k: merged[k] - pre[k] for k in pre}
    summed = {k: sum(ft[k] - pre[k] for ft in fts) for k in pre}
    norm = lambda d: float(sum((v ** 2).sum() for v in d.values())) ** 0.5  # noqa: E731
    alpha = norm(summed) / (K * norm(m))
    blocks = sorted({int(x.group(1)) for k in pre if (x := re.search(r"resblocks\.(\d+)\.", k))})
    last = max(len(blocks) - 1, 1)
    out = {}
    for key in pre:
        x = re.search(r"resblocks\.(\d+)\.", key)
        factor = alpha if x is None else alpha + beta * blocks.index(int(x.group(1))) / last
        out[key] = pre[key] + factor * m[key]
    return out
