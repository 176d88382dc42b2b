"""TSV-M (and Iso-CTS) at ViT-B/32 scale: the float64 Gram route for float32 task vectors
(`merge/tsv.py`: top singular triplets and polar factors through a GEMM and `eigh`) against the
float32 SVDs it replaced, side by side in one process on the same task vectors.

    .venv/bin/python bench/tsv_speed.py [--tasks 8] [--methods tsv,iso_cts,view]

``view`` times the TSV view (`analysis/tsv_view.py`: every matrix's spectrum, its top 10% triplets
and the singular task interference of every pair) against the code it replaced, which took a full
float64 SVD of each matrix and formed each pair's Gram matrices on its own, and prints the largest
differences between the two records.

Task vectors are structured as real ones are (bench/realscale.py's recipe): per matrix a rank-4
update plus small dense noise, on open_clip ViT-B/32's exact image-tower shapes. Prints seconds
for each route and, on the first transformer block's matrices, each route's largest error against
the same merge computed with float64 SVDs, relative to the largest entry of that reference.
"""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from vitb32 import structured_update, vitb32_shapes  # noqa: E402


def structured_task_vectors(K: int):
    from tatr_core.vectors import TaskVectors

    shapes = vitb32_shapes()
    g = torch.Generator().manual_seed(0)
    pre = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    fts = []
    for k in range(K):
        gk = torch.Generator().manual_seed(1000 + k)
        ft = {}
        for key, s in shapes.items():
            ft[key] = pre[key] + structured_update(s, gk)
        fts.append(ft)
    return TaskVectors.from_state_dicts(pre, fts)


ROUTES = ("float32 SVD", "float64 Gram")


@contextmanager
def route(name: str):
    """Run the merges inside on one route: the Gram route as shipped, or the float32 SVDs it replaced."""
    from tatr_core.merge import tsv as tsv_module

    gram_route = tsv_module._gram_route
    if name == "float32 SVD":
        tsv_module._gram_route = lambda a: False
    try:
        yield
    finally:
        tsv_module._gram_route = gram_route


def block_errors(tv, method: str) -> dict[str, float]:
    """Each route's largest error on resblocks.0's matrices against float64 SVDs of the same matrices."""
    from tatr_core.merge import iso, tsv

    merge_matrix = {"tsv": tsv.tsv_matrix, "iso_cts": lambda mats: iso.iso_cts_matrix(mats, 0.8)}[method]
    errors = dict.fromkeys(ROUTES, 0.0)
    for key, sl, shape in tv.layout.items():
        if len(shape) != 2 or ".resblocks.0." not in f".{key}":
            continue
        mats = [tv.deltas[k, sl].view(shape) for k in range(tv.K)]
        reference = merge_matrix([m.double() for m in mats])  # float64 input: the SVD route
        for name in ROUTES:
            with route(name):
                got = merge_matrix(mats).double()
            errors[name] = max(errors[name], float((got - reference).abs().max() / reference.abs().max()))
    return errors


def naive_view(tv, names, rank_fraction: float = 0.1) -> dict:
    """The TSV view as it was computed before: a full float64 SVD per matrix, a pair of GEMMs per pair."""
    from tatr_core.analysis.tsv_view import singular_task_interference

    spectra, per_layer = {}, {}
    for key, sl, shape in tv.layout.items():
        if len(shape) != 2:
            continue
        rank = max(1, int(rank_fraction * min(shape)))
        svds, spectra[key] = [], {}
        for k, t in enumerate(names):
            u, s, vh = torch.linalg.svd(tv.deltas[k, sl].view(shape).double(), full_matrices=False)
            spectra[key][t] = (s / s[0].clamp(min=1e-30)).tolist()
            svds.append((u[:, :rank], s[:rank], vh[:rank].T))
        m = torch.zeros(tv.K, tv.K, dtype=torch.float64)
        for i in range(tv.K):
            for j in range(i + 1, tv.K):
                m[i, j] = m[j, i] = singular_task_interference(svds[i], svds[j])
        per_layer[key] = m.tolist()
    return {"spectra": spectra, "per_layer": per_layer}


def compare_view(tv) -> None:
    """The TSV view both ways on the same task vectors: seconds, and how far apart the records are."""
    from tatr_core.analysis.tsv_view import task_singular_view

    names = [f"task{k}" for k in range(tv.K)]
    t0 = time.perf_counter()
    old = naive_view(tv, names)
    naive_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    new = task_singular_view(tv, names)
    fast_s = time.perf_counter() - t0
    spectrum_err = max(abs(a - b) for layer in old["spectra"] for t in names
                       for a, b in zip(old["spectra"][layer][t], new["spectra"][layer][t]))
    sti_err = max(abs(a - b) / max(abs(a), 1e-300) for layer in old["per_layer"]
                  for ra, rb in zip(old["per_layer"][layer], new["per_layer"][layer]) for a, b in zip(ra, rb) if a)
    print(f"| view | full float64 SVDs, pair by pair | {naive_s:.1f} | reference |", flush=True)
    print(f"| view | float64 Gram, all pairs from two Grams | {fast_s:.1f} | σ/σ₁ within {spectrum_err:.1e}, "
          f"interference within {sti_err:.1e} (relative) |", flush=True)
    print(f"view: {naive_s / fast_s:.2f}× faster than the full-SVD view")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--methods", default="tsv")
    args = ap.parse_args()

    from tatr_core.merge import merge

    tv = structured_task_vectors(args.tasks)
    matrices = sum(1 for _, _, shape in tv.layout.items() if len(shape) == 2)
    print(f"K = {tv.K}, N = {tv.N:,}, {matrices} matrices; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| method | route | seconds | error on resblocks.0 against float64 SVDs |\n|---|---|---:|---:|")
    for method in args.methods.split(","):
        if method == "view":
            compare_view(tv)
            continue
        errors = block_errors(tv, method)
        seconds = {}
        for name in ROUTES:
            with route(name):
                t0 = time.perf_counter()
                merge(tv, method, lam=1.0)
                seconds[name] = time.perf_counter() - t0
            print(f"| {method} | {name} | {seconds[name]:.1f} | {errors[name]:.1e} |", flush=True)
        print(f"{method}: the Gram route is {seconds['float32 SVD'] / seconds['float64 Gram']:.2f}× faster and "
              f"{errors['float32 SVD'] / max(errors['float64 Gram'], 1e-300):.0f}× closer to float64 SVDs")

if __name__ == "__main__":
    main()
