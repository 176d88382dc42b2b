"""Peak host memory and time of loading a manifest zoo of K ViT-B/32-sized image encoders.

Writes θ_pre and K fine-tuned encoders as safetensors with open_clip's exact ViT-B/32 shapes
(random weights), heads and a few images per task, and a manifest; then loads the zoo in a fresh
process, cold (the task vectors are built into the cache) and warm (mapped from it), and merges
once (Task Arithmetic, which reads every task vector).  Each child reports its peak resident
memory (``ru_maxrss``) and, at the end, how much of it is anonymous memory and how much is pages
of mapped files (which the OS can drop and which processes mapping the same file share).

    .venv/bin/python bench/lazy_zoo.py [--tasks 8] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from tatr_core.zoo import load_zoo
t1 = time.perf_counter()
zoo = load_zoo(sys.argv[1])
t2 = time.perf_counter()
tv = zoo.task_vectors
merged = tv.pretrained + 0.3 * tv.deltas.sum(0)
t3 = time.perf_counter()
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
kib = lambda k: int(status[k].split()[0]) / 2**20
print(json.dumps({"load_s": t2 - t1, "merge_s": t3 - t2, "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "anon_gib": kib("RssAnon"), "file_gib": kib("RssFile"), "N": tv.N, "K": tv.K}))
"""


def write_zoo(root: Path, K: int) -> Path:
    import numpy as np
    import torch
    from PIL import Image

    from tatr_core.checkpoints import save_safetensors
    from vitb32 import random_state_dict, vitb32_shapes

    shapes = vitb32_shapes()
    pre = random_state_dict(shapes, 0)
    save_safetensors(pre, root / "pretrained.safetensors")
    tasks = {}
    rng = np.random.default_rng(0)
    for k in range(K):
        name = f"task{k + 1}"
        save_safetensors(random_state_dict(shapes, k + 1, base=pre), root / f"{name}.safetensors")
        save_safetensors({"weight": torch.nn.functional.normalize(torch.randn(2, 512), dim=1)}, root / f"head_{name}.safetensors")
        for split in ("train", "test"):
            for c in ("a", "b"):
                d = root / "data" / name / split / c
                d.mkdir(parents=True)
                for i in range(2):
                    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
        tasks[name] = {"finetuned": f"{name}.safetensors", "head": f"head_{name}.safetensors", "data": f"data/{name}"}
    manifest = root / "zoo.json"
    manifest.write_text(json.dumps({"name": f"vitb32-{K}", "arch": "ViT-B-32", "image_size": 32, "pretrained": "pretrained.safetensors",
                                    "tasks": tasks}))
    return manifest


def child(manifest: Path, cache: Path, code_root: Path) -> dict:
    env = {**os.environ, "TATR_CACHE": str(cache), "PYTHONPATH": str(code_root)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(manifest)], capture_output=True, text=True, env=env, cwd=code_root)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--before", default=None, metavar="DIR", help="also load with the code checked out in DIR (another commit)")
    ap.add_argument("--keep", default=None, metavar="DIR", help="write the zoo here and keep it")
    args = ap.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="tatr-lazy-zoo-"))
    root.mkdir(parents=True, exist_ok=True)
    manifest = root / "zoo.json" if (root / "zoo.json").exists() else write_zoo(root, args.tasks)
    size = sum(f.stat().st_size for f in root.glob("task*.safetensors")) / 2**30
    print(f"{args.tasks} fine-tuned ViT-B/32 image encoders: {size:.2f} GiB of safetensors")
    projection = ""
    runs = [("this tree", ROOT)] + ([("before", Path(args.before))] if args.before else [])
    print(f"{'code':12s}{'load':>6s}{'load s':>8s}{'merge s':>9s}{'peak GiB':>10s}{'anon GiB':>10s}{'mapped GiB':>12s}")
    for label, code in runs:
        cache = Path(tempfile.mkdtemp(prefix="tatr-lazy-cache-"))
        for when in ("cold", "warm"):
            r = child(manifest, cache, code)
            print(f"{label:12s}{when:>6s}{r['load_s']:8.1f}{r['merge_s']:9.2f}{r['peak_gib']:10.2f}{r['anon_gib']:10.2f}"
                  f"{r['file_gib']:12.2f}", flush=True)
            if label == "this tree" and when == "warm":
                model = r["N"] * 4 / 2**30
                anon_models = r["anon_gib"] / model
                l14 = 304.3e6 * 4 / 2**30
                projection = (f"projected to a 20-task ViT-L/14 zoo ({l14:.2f} GiB per model): {anon_models:.1f} models' worth "
                              f"of anonymous memory per process = {anon_models * l14:.1f} GiB, and the mapped task vectors, "
                              f"20 × {l14:.2f} = {20 * l14:.1f} GiB of file pages shared by every process on the node")
        shutil.rmtree(cache, ignore_errors=True)
    print(projection)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
