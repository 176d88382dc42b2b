"""TSV-M, Iso-CTS and the TSV view at ViT-B/32 scale, side by side with their authors' route, in one
process on the same task vectors.

    .venv/bin/python bench/tsv_speed.py [--tasks 8,20] [--methods tsv,iso_cts,view]

The authors' route, written here from their published algorithms: TSV-M
(``compute_and_sum_svd_mem_reduction``): a full float32 SVD of every task matrix, truncation to ⌊r/K⌋
triplets, SVDs of the two concatenations and their polar factors; Iso-CTS: a full SVD of the summed
matrix, the m × m projector of its common subspace applied to every task matrix, a full SVD of each
residual, SVDs of the concatenations; the view: a full SVD of every task matrix (float64, as the
view's record needs every singular value) and each pair's Gram matrices.  The project's route is
``tatr_core.linalg`` (float64 Gram matrices by ``dsyrk``, the top eigenpairs by LAPACK ``syevr``).

Task vectors are structured as real ones are (bench/realscale.py's recipe): per matrix a rank-4
update plus small dense noise, on open_clip ViT-B/32's exact image-tower shapes.  Prints seconds for
each route, the ratio, and on the first transformer block's matrices each route's error against the
same merge computed with float64 SVDs, relative to the norm of that reference.
"""
from __future__ import annotations

import argparse
import sys
import time
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


def _top_svd(m: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The authors' step: a full float32 SVD, truncated to the top ``k`` triplets."""
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    return u[:, :k], s[:k], vh[:k]


def authors_tsv_matrix(mats: list[torch.Tensor]) -> torch.Tensor:
    """TSV-M as the authors' ``compute_and_sum_svd_mem_reduction`` computes one matrix."""
    k = min(mats[0].shape) // len(mats)
    if k == 0:
        return torch.zeros_like(mats[0])
    us, ss, vs = (list(x) for x in zip(*(_top_svd(m, k) for m in mats)))
    u_u, _, vh_u = torch.linalg.svd(torch.cat(us, 1), full_matrices=False)
    u_v, _, vh_v = torch.linalg.svd(torch.cat(vs, 0), full_matrices=False)
    return torch.linalg.multi_dot((u_u, vh_u, torch.diag(torch.cat(ss)), u_v, vh_v))


def authors_iso_cts_matrix(mats: list[torch.Tensor], fraction: float = 0.8) -> torch.Tensor:
    """Iso-CTS as the authors' code computes one matrix."""
    r = min(mats[0].shape)
    common = int(r * fraction)
    per_task = round((r - common) / len(mats))
    common = r - per_task * len(mats)
    u, s, vh = torch.linalg.svd(sum(mats), full_matrices=False)
    cu, cs, cv = u[:, :common], s[:common], vh[:common]
    us, ss, vs = [cu], [cs], [cv]
    for m in mats:
        tu, ts, tvh = _top_svd(m - cu @ cu.T @ m, per_task)
        us.append(tu)
        ss.append(ts)
        vs.append(tvh)
    u_u, _, vh_u = torch.linalg.svd(torch.cat(us, 1), full_matrices=False)
    u_v, _, vh_v = torch.linalg.svd(torch.cat(vs, 0), full_matrices=False)
    return torch.cat(ss).mean() * (u_u @ vh_u) @ (u_v @ vh_v)


def authors_merge(tv, method: str) -> torch.Tensor:
    """The authors' whole merge: every matrix by their route, the other tensors averaged."""
    matrix = {"tsv": authors_tsv_matrix, "iso_cts": authors_iso_cts_matrix}[method]
    merged = tv.deltas.mean(0)
    for key, sl, shape in tv.layout.items():
        if len(shape) == 2:
            merged[sl] = matrix([tv.deltas[k, sl].view(shape) for k in range(tv.K)]).reshape(-1)
    return merged


def block_errors(tv, method: str) -> dict[str, float]:
    """Each route's error on resblocks.0's matrices against the same merge with float64 SVDs."""
    from tatr_core.merge import iso, tsv

    ours = {"tsv": tsv.tsv_matrix, "iso_cts": lambda mats: iso.iso_cts_matrix(mats, 0.8)}[method]
    authors = {"tsv": authors_tsv_matrix, "iso_cts": authors_iso_cts_matrix}[method]
    errors = {"authors": 0.0, "tatr_core": 0.0}
    for key, sl, shape in tv.layout.items():
        if len(shape) != 2 or ".resblocks.0." not in f".{key}":
            continue
        mats = [tv.deltas[k, sl].view(shape) for k in range(tv.K)]
        reference = authors([m.double() for m in mats])  # float64 SVDs
        for name, route in (("authors", authors), ("tatr_core", ours)):
            got = route(mats).double()
            errors[name] = max(errors[name], float((got - reference).norm() / reference.norm()))
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


def compare_view(tv) -> tuple[float, float]:
    """The TSV view both ways on the same task vectors; prints how far apart the records are."""
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
    print(f"| {tv.K} | view | {naive_s:.1f} | {fast_s:.1f} | {naive_s / fast_s:.2f}× | σ/σ₁ within {spectrum_err:.1e}, "
          f"interference within {sti_err:.1e} (relative) |", flush=True)
    return naive_s, fast_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="8", help="comma-separated K values")
    ap.add_argument("--methods", default="tsv,iso_cts,view")
    args = ap.parse_args()

    from tatr_core.merge import merge

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| K | method | authors' route s | tatr_core s | speed-up | error against float64 SVDs (resblocks.0): "
          "authors', tatr_core's |\n|---:|---|---:|---:|---:|---|")
    for K in map(int, args.tasks.split(",")):
        tv = structured_task_vectors(K)
        for method in args.methods.split(","):
            if method == "view":
                compare_view(tv)
                continue
            errors = block_errors(tv, method)
            t0 = time.perf_counter()
            authors = authors_merge(tv, method)
            authors_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            ours = merge(tv, method, lam=1.0).theta - tv.pretrained
            ours_s = time.perf_counter() - t0
            apart = float((ours - authors).norm() / authors.norm())
            print(f"| {K} | {method} | {authors_s:.1f} | {ours_s:.1f} | {authors_s / ours_s:.2f}× | "
                  f"{errors['authors']:.1e}, {errors['tatr_core']:.1e} (the two whole merges {apart:.1e} apart) |",
                  flush=True)


if __name__ == "__main__":
    main()
