"""Analyses on Ray: wall time of a conflict matrix and a landscape with 1 and 2 workers, side by side.

Every configuration computes the same points from a cold points cache (the zoo, its preprocessed
images and its gradients stay warm: they are computed once, by the driver, whatever the
executor).  Each configuration's numbers must equal the first one's: the script stops otherwise.

* local: the default executor, in this process (torch on every core);
* ray 1×1: one Ray worker with 1 CPU; ray 2×1: two workers with 1 CPU each (scale-out: the ratio
  is the speed-up from the second worker);
* ray 1×2: one worker with both CPUs (what Ray costs over local on the same cores).

"start" is the time to start the workers (each loads the zoo and builds its evaluator), or, for
local, to build the evaluator; "wall" is the analysis after that.

Then ``--plan`` prints the arithmetic for GPU nodes (see BENCHMARKS.md).

    .venv/bin/python bench/scaleout.py [--zoos micro mini] [--step 0.2] [--plan]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tatr_core.cache as cache  # noqa: E402
from tatr_core import executors, options  # noqa: E402
from tatr_core.analysis.components import grid_axis, loss_landscape  # noqa: E402
from tatr_core.analysis.conflict import conflict_matrix  # noqa: E402
from tatr_core.evaluate import Evaluator  # noqa: E402
from tatr_core.gradients import compute_task_gradients  # noqa: E402
from tatr_core.zoo import load_zoo  # noqa: E402

REAL_ROOT = cache.root()
WARM = ("zoos", "data", "grads")  # kinds every configuration shares


def cold_points_cache() -> Path:
    """A fresh cache root sharing only the zoos, images and gradients of the real one."""
    root = Path(tempfile.mkdtemp(prefix="tatr-scaleout-"))
    for kind in WARM:
        (REAL_ROOT / kind).mkdir(parents=True, exist_ok=True)
        os.symlink(REAL_ROOT / kind, root / kind)
    options.set_current(options.current().replace(cache_root=root))
    return root


def strip(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("seconds",)}


def measure(zoo, step: float) -> None:
    compute_task_gradients(zoo, 128, 0)  # warm, in the real cache: not part of any configuration's time
    n = len(grid_axis(step=step))
    analyses = [
        (f"conflict matrix, Task Arithmetic ({len(zoo.tasks) + 1} merges)", len(zoo.tasks) + 1,
         lambda ev: conflict_matrix(zoo, "task_arithmetic", evaluator=ev)),
        (f"landscape {n}×{n}, total loss, 200 img/task", n * n, lambda ev: loss_landscape(zoo, None, step=step, evaluator=ev)),
    ]
    configs = [("local", lambda: executors.LOCAL),
               ("ray 1×1", lambda: executors.RayExecutor(workers=1, cpus_per_worker=1)),
               ("ray 2×1", lambda: executors.RayExecutor(workers=2, cpus_per_worker=1)),
               ("ray 1×2", lambda: executors.RayExecutor(workers=1, cpus_per_worker=2))]
    print(f"\nzoo {zoo.name}: {len(zoo.tasks)} tasks, N = {zoo.task_vectors.N:,}, {os.cpu_count()} CPUs", flush=True)
    print(f"{'analysis':48s}{'executor':>10s}{'points':>8s}{'start s':>9s}{'wall s':>9s}{'s/point':>9s}"
          f"{'vs ray 1×1':>12s}")
    first: dict[str, dict] = {}
    one_worker: dict[str, float] = {}
    for cname, make in configs:
        cold_points_cache()
        ex = make()
        t0 = time.perf_counter()
        ev = None
        if ex is executors.LOCAL:  # its encoder and data, as a worker's start builds them
            ev = Evaluator(zoo)
            ev.data(zoo.task_names[0], "test")
        else:
            ex.pool(zoo)
        start = time.perf_counter() - t0
        for aname, points, fn in analyses:
            with executors.using(ex):
                t0 = time.perf_counter()
                record = fn(ev)
                wall = time.perf_counter() - t0
            if aname in first and strip(record) != first[aname]:
                raise SystemExit(f"{cname} computed different numbers for {aname}")
            first.setdefault(aname, strip(record))
            if cname == "ray 1×1":
                one_worker[aname] = wall
            ratio = f"{one_worker[aname] / wall:11.2f}×" if aname in one_worker else f"{'':>12s}"
            print(f"{aname:48s}{cname:>10s}{points:8d}{start:9.1f}{wall:9.1f}{wall / points:9.3f}{ratio}", flush=True)
        if ex is not executors.LOCAL:
            ex.shutdown()
    print("every configuration computed the same numbers")


# ------------------------------------------------------------------------------ the plan on paper
#: measured on one H100 with the 8-task ViT-B/32 zoo in the Hugging Face layout (issue 10's table):
#: a plain bf16-autocast loop over uint8 tensors, and the project's evaluator in fp32
H100_VITB32_BF16_IMG_S = 18_800
H100_VITB32_FP32_IMG_S = 4_400
#: forward GFLOPs per 224×224 image of the image towers (open_clip model configs; ViT-L/14 sees 256
#: patches of 14 px against ViT-B/32's 49 of 32 px)
GFLOPS = {"ViT-B/32": 4.4, "ViT-L/14": 81.1}
PARAMS = {"ViT-B/32": 87.8e6, "ViT-L/14": 304.3e6}
#: anonymous host memory of a process that loaded a manifest zoo and merged once, in models' worth
#: (bench/lazy_zoo.py: 0.94 GiB with ViT-B/32, 2.9 models); the task vectors are mapped file pages
ANON_MODELS = 2.9
#: TATR's Ω + top-τ + merge, K = 8, measured in issue 10: today's core runs it on the CPU (16 threads);
#: a device-resident core (issue 10) would take the CUDA figure
MERGE_K8_S = {"ViT-L/14": {"cpu (today)": 9.85, "cuda (issue 10 target)": 0.070}}


def plan() -> None:
    arch, K = "ViT-L/14", 20
    img_s = H100_VITB32_BF16_IMG_S * GFLOPS["ViT-B/32"] / GFLOPS[arch]
    gb = PARAMS[arch] * 4 / 1e9
    merge_cpu = MERGE_K8_S[arch]["cpu (today)"] * K / 8  # Ω is O(K·N): linear in K
    print(f"\nplan for a {K}-task {arch} zoo on H100s (inputs: bf16 evaluation at {img_s:,.0f} img/s per GPU, the "
          f"ViT-B/32 {H100_VITB32_BF16_IMG_S:,} img/s measured in issue 10 scaled by {GFLOPS['ViT-B/32']}/{GFLOPS[arch]} "
          f"GFLOPs; a TATR merge at K = {K} {merge_cpu:.1f} s on the CPU, the K = 8 measurement scaled by K)")
    print(f"memory per worker: one model is {gb:.2f} GB in fp32. A landscape point holds the encoder, θ_pre and the "
          f"plane (3 vectors): {5 * gb:.1f} GB of GPU memory. On the host, every worker maps the zoo's {K} task vectors "
          f"from the cache file ({K * gb:.1f} GB of file pages, shared by all the workers of a node) and holds about "
          f"{ANON_MODELS} models' worth of its own memory, {ANON_MODELS * gb:.1f} GB (bench/lazy_zoo.py)")
    print(f"object store: the TATR gradients, E|∇L_k| and E∇L_k, are 2 × K × N floats = {2 * K * PARAMS[arch] * 4 / 1e9:.1f} GB, "
          f"sent to each node once")
    rows = [("15×15 landscape, 200 img/task", 225, 200 * K, 0.0),
            ("15×15 landscape, full test sets (~200k img)", 225, 200_000, 0.0),
            (f"conflict matrix K = {K} (TATR), full test sets", K + 1, 200_000, merge_cpu),
            ("τ × λ grid, 5 methods × 60 points, 200 img/task", 300, 200 * K, merge_cpu)]
    print(f"{'analysis':50s}{'points':>7s}{'s/point':>9s}{'1 GPU':>10s}{'8 GPUs':>10s}{'64 GPUs':>10s}")
    for name, points, images, merge_s in rows:
        per_point = images / img_s + merge_s
        cells = []
        for gpus in (1, 8, 64):
            rounds = -(-points // gpus)  # every worker takes points until none is left
            cells.append(fmt(rounds * per_point))
        print(f"{name:50s}{points:7d}{per_point:9.2f}" + "".join(f"{c:>10s}" for c in cells))


def fmt(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoos", nargs="+", default=["micro", "mini"])
    ap.add_argument("--step", type=float, default=0.2, help="landscape grid step over [-0.2, 1.2] (0.2: 8×8)")
    ap.add_argument("--plan", action="store_true", help="only print the plan for GPU nodes")
    args = ap.parse_args()
    if not args.plan:
        for spec in args.zoos:
            measure(load_zoo(spec), args.step)
    plan()


if __name__ == "__main__":
    main()
