"""`python -m tatr_core merge` on 8 ViT-B/32-sized checkpoints from disk: time and peak memory per method.

Writes θ_pre, 8 fine-tuned models and 8 gradient files (random, exact ViT-B/32 shapes,
safetensors) to a scratch folder, then runs the real CLI once per method in a fresh process
and reports what it printed (wall time, peak RSS of the process).

    .venv/bin/python bench/bench_merge_cli.py [--scratch /tmp/tatr_bench] [--methods tatr ties ...]
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from vitb32 import random_state_dict, vitb32_shapes  # noqa: E402

from tatr_core.checkpoints import save_safetensors  # noqa: E402

RUNS = {
    "average": [],
    "task_arithmetic": [],
    "ties": [],
    "tsv": [],
    "tatr": ["--grads", "{grads}"],
    "tatr zero-shot": ["--sensitivity", "zero-shot"],
    "ties & tatr": ["--tau", "0.01", "--grads", "{grads}"],
    "dare": [],
    "consensus": [],
    "magmax": [],
    "pcb": [],
    "iso_c": [],
    "iso_cts": [],
    "pcb & tatr": ["--tau", "0.01", "--grads", "{grads}"],
    "model_stock": [],
    "cart": [],
    "tsv_c": [],
    "emr": [],
    "wudi": [],
    "task_arithmetic & lines": ["--lines-beta", "0.5"],
    "tatr & lines": ["--lines-beta", "0.5", "--grads", "{grads}"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scratch", default="/tmp/tatr_bench")
    ap.add_argument("--K", type=int, default=8)
    ap.add_argument("--methods", nargs="*", default=list(RUNS))
    args = ap.parse_args()
    d = Path(args.scratch)
    d.mkdir(parents=True, exist_ok=True)
    shapes = vitb32_shapes()
    if not (d / "pre.safetensors").exists():
        pre = random_state_dict(shapes, 0)
        save_safetensors(pre, d / "pre.safetensors")
        for k in range(args.K):
            save_safetensors(random_state_dict(shapes, 1 + k, base=pre), d / f"ft{k}.safetensors")
            save_safetensors({n: v.abs() for n, v in random_state_dict(shapes, 100 + k).items()}, d / f"g{k}.safetensors")
    fts = [str(d / f"ft{k}.safetensors") for k in range(args.K)]
    grads = [str(d / f"g{k}.safetensors") for k in range(args.K)]
    print(f"{'run':24s}{'wall s':>8s}{'peak RSS GiB':>14s}  summary")
    for name in args.methods:
        method = name.split()[0]
        extra = []
        for a in RUNS[name]:
            extra += grads if a == "{grads}" else [a]
        out = d / "merged" / "merged.safetensors"  # a task-aware method writes its task models beside it
        out.parent.mkdir(exist_ok=True)
        cmd = [sys.executable, "-m", "tatr_core", "merge", "--pretrained", str(d / "pre.safetensors"),
               "--finetuned", *fts, "--method", method, *extra, "--out", str(out)]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            print(f"{name:24s} FAILED: {r.stderr.strip()}")
            continue
        rss = re.search(r"peak_rss=([\d.]+)GiB", r.stdout).group(1)
        print(f"{name:24s}{wall:8.1f}{float(rss):14.1f}  {r.stdout.strip()}", flush=True)


if __name__ == "__main__":
    main()
