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
    """Indices of the ⌊τN⌋ largest Ω by a full sort (value descending, index ascending)."""
    N = omega.numel()
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


def ties(pre: dict, fts: list[dict], density: float, lam: float) -> dict:
    keys = list(pre)
    deltas = [flat(ft, keys) - flat(pre, keys) for ft in fts]
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
        total = sum(float(t[n]) for t in trimmed)
        sign = (total > 0) - (total < 0)
        values = [float(t[n]) for t in trimmed]
        agreeing = [v for v in values if v != 0 and ((v > 0) - (v < 0)) == sign]
        merged[n] = sum(agreeing) / len(agreeing) if agreeing else 0.0
    theta = flat(pre, keys) + lam * merged
    out, off = {}, 0
    for key in keys:
        n = pre[key].numel()
        out[key] = theta[off: off + n].view_as(pre[key])
        off += n
    return out


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
