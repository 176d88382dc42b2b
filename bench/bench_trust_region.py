"""Ω + trust-region mask + TATR merge for K = 8 ViT-B/32-sized models: tatr_core vs a naive reference.

The naive reference is written the way published implementations do it: per parameter
tensor, a K² double loop over task pairs for Ω = Σ_{i≠j} G_j ⊙ |Δ_i|, then a full sort of
all N values to find the top-τ threshold, then the masked task-arithmetic sum.
Both run in this process on the same inputs; the script checks that they select the same
dimensions and print the same merged model, then prints times, the speed ratio and each
one's peak memory above the inputs.

    .venv/bin/python bench/bench_trust_region.py [--K 8] [--tau 0.01]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory import peak_rss  # noqa: E402
from vitb32 import random_state_dict, vitb32_shapes  # noqa: E402

from tatr_core.merge import merge  # noqa: E402
from tatr_core.vectors import TaskVectors  # noqa: E402


def naive_tatr(pre: dict, fts: list[dict], grads: list[dict], tau: float, lam: float) -> tuple[dict, int]:
    keys = list(pre)
    K = len(fts)
    deltas = [{k: ft[k] - pre[k] for k in keys} for ft in fts]
    omega = {}
    for k in keys:  # K² pairwise loop, per tensor
        acc = torch.zeros_like(pre[k])
        for j in range(K):
            for i in range(K):
                if i != j:
                    acc += grads[j][k].abs() * deltas[i][k].abs()
        omega[k] = acc
    flat = torch.cat([omega[k].reshape(-1) for k in keys])
    n_out = int(tau * flat.numel())
    threshold = torch.sort(flat, descending=True).values[n_out - 1]  # full sort of all N values
    merged = {}
    excluded = 0
    for k in keys:
        keep = omega[k] < threshold
        excluded += int((~keep).sum())
        total = sum(d[k] for d in deltas)
        merged[k] = pre[k] + lam * total * keep
    return merged, excluded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--K", type=int, default=8)
    ap.add_argument("--tau", type=float, default=0.01)
    ap.add_argument("--lam", type=float, default=0.3)
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    shapes = vitb32_shapes()
    pre = random_state_dict(shapes, 0)
    fts = [random_state_dict(shapes, 1 + k, base=pre) for k in range(args.K)]
    grads = [{k: v.abs() for k, v in random_state_dict(shapes, 100 + k).items()} for k in range(args.K)]
    N = sum(s.numel() for s in shapes.values())
    print(f"K={args.K}  N={N:,} parameters per model  tau={args.tau}  torch threads={torch.get_num_threads()}")

    layout: dict = {}
    with peak_rss(layout):  # one-off: copy the state dicts into the flat (K, N) layout
        tv = TaskVectors.from_state_dicts(pre, fts)
        G = tv.flatten_aux(grads, [f"g{k}" for k in range(args.K)], "grads")
    fast: dict = {}
    with peak_rss(fast):
        res = merge(tv, "tatr", lam=args.lam, tau=args.tau, sensitivity="gradient", grads=G)
        fast_sd = tv.to_state_dict(res.theta)
    del G
    slow: dict = {}
    with peak_rss(slow):
        slow_sd, slow_excluded = naive_tatr(pre, fts, grads, args.tau, args.lam)

    differ = sum(int(((fast_sd[k] - slow_sd[k]).abs() > 1e-6).sum()) for k in shapes)
    print(f"excluded dimensions: tatr_core {res.excluded:,}  naive {slow_excluded:,}; "
          f"dimensions chosen differently: {differ:,} (float32 rounding of Ω right at the threshold)")
    gib = 2**30
    print(f"{'':34s}{'seconds':>9s}{'peak RSS GiB':>14s}{'above start GiB':>17s}")
    for name, r in (("tatr_core: flat layout (one-off)", layout), ("tatr_core: Ω + mask + merge", fast),
                    ("naive: K² loop + sort + merge", slow)):
        print(f"{name:34s}{r['seconds']:9.1f}{r['peak'] / gib:14.2f}{r['extra'] / gib:17.2f}")
    total = layout["seconds"] + fast["seconds"]
    print(f"speed-up, Ω + mask + merge: {slow['seconds'] / fast['seconds']:.1f}x; including the layout copy: "
          f"{slow['seconds'] / total:.1f}x")


if __name__ == "__main__":
    main()
