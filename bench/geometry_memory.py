"""Working memory of the task-vector geometry (norms, cosines, top-10% overlap; the Learn page's
first figure) at ViT-B/32 scale: tatr_core's column-block version against the whole-matrix one
it replaced (float64 copies of the (K, N) task vectors, a topk per row), each on the same random
(K, N) float32 task vectors in a process of its own.

    .venv/bin/python bench/geometry_memory.py [--n 87456000] [--reference-n 20000000] [--tasks 8]

The reference needs about 8·K·N bytes × 2.5 above the task vectors (21 GiB at ViT-B/32 with K = 8),
so the side-by-side run is at ``--reference-n`` (20M), and tatr_core alone also runs at ``--n``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def reference_geometry(zoo) -> dict:
    """The whole-matrix computation the project used before (and the obvious one)."""
    import torch

    deltas = zoo.task_vectors.deltas.double()
    norms = deltas.norm(dim=1)
    unit = deltas / norms.clamp_min(1e-30)[:, None]
    cosine = unit @ unit.T
    k = max(1, deltas.shape[1] // 10)
    top = torch.zeros_like(deltas, dtype=torch.bool)
    top.scatter_(1, deltas.abs().topk(k, dim=1).indices, True)
    shared = top.double() @ top.double().T / k
    return {"norms": norms.tolist(), "cosine": cosine.tolist(), "overlap": shared.tolist()}


def one(which: str, n: int, tasks: int) -> dict:
    import torch

    from memory import peak_rss
    from tatr_core.analysis.geometry import task_vector_geometry

    deltas = torch.randn(tasks, n, generator=torch.Generator().manual_seed(0))
    zoo = types.SimpleNamespace(task_vectors=types.SimpleNamespace(deltas=deltas),
                                task_names=[f"t{i}" for i in range(tasks)])
    fn = task_vector_geometry if which == "tatr_core" else reference_geometry
    result: dict = {}
    with peak_rss(result):
        geo = fn(zoo)
    return {"seconds": result["seconds"], "extra": result["extra"], "vectors": deltas.numel() * 4,
            "cosine": geo["cosine"], "overlap": geo["overlap"]}


def run(which: str, n: int, tasks: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", which, "--n", str(n), "--tasks", str(tasks)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=87_456_000, help="parameters per task vector (ViT-B/32: 87,456,000)")
    ap.add_argument("--reference-n", type=int, default=20_000_000, help="N for the side-by-side run with the reference")
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--one", choices=("tatr_core", "reference"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.n, args.tasks)))
        return
    print("| run | N | K | seconds | task vectors GiB | working memory above them GiB |\n|---|---:|---:|---:|---:|---:|")
    side = {}
    for which, n in (("tatr_core", args.reference_n), ("reference", args.reference_n), ("tatr_core", args.n)):
        r = run(which, n, args.tasks)
        print(f"| {which} | {n:,} | {args.tasks} | {r['seconds']:.1f} | {r['vectors'] / 2**30:.2f} | "
              f"{r['extra'] / 2**30:.2f} |", flush=True)
        if n == args.reference_n:
            side[which] = r
    a, b = side["tatr_core"], side["reference"]
    cos = max(abs(x - y) for ra, rb in zip(a["cosine"], b["cosine"]) for x, y in zip(ra, rb))
    ovl = max(abs(x - y) for ra, rb in zip(a["overlap"], b["overlap"]) for x, y in zip(ra, rb))
    print(f"\nat N = {args.reference_n:,}: {b['extra'] / a['extra']:.1f}× less working memory, "
          f"{b['seconds'] / a['seconds']:.2f}× the speed; largest difference: cosine {cos:.1e}, overlap {ovl:.1e}")


if __name__ == "__main__":
    main()
