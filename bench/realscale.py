"""The researcher's path on a ViT-B/32 zoo in the Hugging Face layout, timed on whatever machine runs it.

Writes an 8-task zoo exactly as `examples/huggingface_clip_vit_b32.yaml` lays one out:
- θ_pre as a Hugging Face folder (CLIPVisionModelWithProjection);
- K CLIPVisionModel folders, each without the projection;
- head files;
- PNG folders at 32 px that the loader resizes to 224;
- a manifest.

The weights are random, since nothing can be downloaded. Each task vector is structured: a
rank-4 update per matrix plus small dense noise.

Then the script times each step, with its peak memory on the device (CUDA: allocated; CPU: the
process's resident set). Where there is a ratio, both sides run in this process on the same inputs.

| step | what it runs | ratio against |
|---|---|---|
| zoo load | cold (builds the mapped task vectors), then warm | |
| evaluator | its encoder, data on the device, the bf16 check on CUDA | |
| eval | img/s | a lean loop over the same uint8 tensors (bf16 autocast on CUDA, fp32 on the CPU) |
| grads | per-task gradients at θ_pre | |
| TATR merge | Ω + top-τ + merge | a naive K² loop + full sort on the same inputs (same mask checked) |
| TSV-M | the merge | |
| top-τ selection | `topk` and `kthvalue` on the same Ω, each after a warm-up | each other |
| τ sweep, conflict matrix, landscape | the analyses, on `--sample` images per task | |
| the whole path | the sum of the steps from zoo load to landscape | the ≤ 10 min target |
| ViT-L/14-sized merges | K = 8 and K = 20, synthetic tensors | skipped, with the reason, when memory is short |

    .venv/bin/python bench/realscale.py                       # a GPU box: the full-size run
    .venv/bin/python bench/realscale.py --images 4 --exemplars 8 --sample 16 --grid 3 --taus 0,0.01,0.05 --skip-large   # 2 CPU cores

``--out FILE`` rewrites the table into FILE after every step, so a run stopped by a time limit keeps
what it measured (``bench/gpu_run.sh`` writes it under the device's ``$OUT``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
if "TATR_CACHE" not in os.environ:  # a scratch cache: nothing from an earlier run is reused
    os.environ["TATR_CACHE"] = tempfile.mkdtemp(prefix="tatr-realscale-cache-")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import tatr_core  # noqa: E402,F401  (torchvision shim before transformers / open_clip)
from bench_trust_region import naive_tatr  # noqa: E402
from memory import peak_rss  # noqa: E402
from vitb32 import structured_update  # noqa: E402

ROWS: list[tuple] = []
#: where the table is rewritten after every step (``--out``): a run stopped by a time limit keeps its rows
OUT_FILE: Path | None = None


def table() -> str:
    lines = ["| step | seconds | ratio / rate | peak memory | note |", "|---|---:|---|---|---|"]
    lines += [f"| {name} | {seconds:.2f} | {ratio} | {memory} | {note} |" for name, seconds, ratio, memory, note in ROWS]
    return "\n".join(lines) + "\n"


def record(row: tuple) -> None:
    """Add a row (name, seconds, ratio, memory, note) and rewrite ``--out``."""
    ROWS.append(row)
    if OUT_FILE is not None:
        OUT_FILE.write_text(table())


def set_ratio(text: str) -> None:
    """Give the last row its ratio (measured after its step) and rewrite ``--out``."""
    name, seconds, _, memory, note = ROWS.pop()
    record((name, seconds, text, memory, note))


#: seconds of each step on the researcher's path (``step(..., path=True)``: what the ≤ 10 min target counts)
PATH_SECONDS: list[float] = []


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_memory_gib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return None


@contextmanager
def step(name: str, device: torch.device, note: str = "", path: bool = False):
    """Time a step and record its peak memory on ``device``; ``out`` collects a ratio or a note.
    ``path``: the step is part of the researcher's path (summed against the 10-minute target)."""
    out: dict = {"note": note}
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss: dict = {}
    with peak_rss(rss):
        t0 = time.perf_counter()
        yield out
        sync(device)
        seconds = time.perf_counter() - t0
    if path:
        PATH_SECONDS.append(seconds)
    peak = device_memory_gib(device)
    memory = f"{peak:.2f} GiB on {device}" if peak is not None else f"{rss['peak'] / 2**30:.2f} GiB RSS"
    record((name, seconds, out.get("ratio", ""), memory, out["note"]))
    print(f"  {name}: {seconds:.2f} s  {out.get('ratio', '')}  {memory}  {out['note']}", flush=True)


# ------------------------------------------------------------------------------ the zoo
def write_zoo(root: Path, K: int, images: int, classes: int, seed: int = 0) -> Path:
    import transformers
    from PIL import Image

    from tatr_core.checkpoints import save_safetensors

    cfg = transformers.CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                        num_attention_heads=12, image_size=224, patch_size=32, projection_dim=512,
                                        hidden_act="quick_gelu")
    torch.manual_seed(seed)
    pre = transformers.CLIPVisionModelWithProjection(cfg).eval()
    pre.save_pretrained(root / "hf" / "clip-vit-base-patch32")
    base = pre.vision_model.state_dict()
    rng = np.random.default_rng(seed)
    tasks = {}
    for k in range(K):
        name = f"task{k + 1}"
        g = torch.Generator().manual_seed(1000 + k)
        ft = {}
        for key, v in base.items():
            if not v.is_floating_point():
                ft[key] = v
                continue
            ft[f"vision_model.{key}"] = (v + structured_update(v.shape, g)).contiguous()
        folder = root / "hf" / f"clip-vit-base-patch32_{name}"
        folder.mkdir(parents=True)
        save_safetensors(ft, folder / "model.safetensors")
        head = torch.nn.functional.normalize(torch.randn(classes, 512, generator=g), dim=1)
        save_safetensors({"weight": head}, root / f"head_{name}.safetensors")
        for split, n in (("train", images), ("test", images)):
            for c in range(classes):
                d = root / "data" / name / split / f"class{c:02d}"
                d.mkdir(parents=True, exist_ok=True)
                colour = rng.integers(0, 255, 3)
                for i in range(n):
                    img = np.clip(colour + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                    Image.fromarray(img).save(d / f"{i}.png")
        tasks[name] = {"finetuned": f"hf/clip-vit-base-patch32_{name}", "head": f"head_{name}.safetensors",
                       "data": f"data/{name}"}
    manifest = root / "zoo.json"
    manifest.write_text(json.dumps({"name": f"realscale ViT-B/32, {K} tasks (random weights)",
                                    "arch": "ViT-B-32-quickgelu", "image_size": 224,
                                    "pretrained": "hf/clip-vit-base-patch32", "tasks": tasks}, indent=1))
    return manifest


# ------------------------------------------------------------------------------ the steps
def lean_loop(zoo, device: torch.device) -> float:
    """img/s of a plain loop: the encoder over every test set's uint8 tensors, bf16 autocast on CUDA."""
    from tatr_core.models import head_logits

    encoder = zoo.make_encoder().to(device)
    mean = torch.tensor(zoo.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(zoo.std, device=device).view(1, 3, 1, 1)
    data = {t: task.split("test")[0].to(device) for t, task in zoo.tasks.items()}
    heads = {t: task.head.to(device) for t, task in zoo.tasks.items()}
    n = sum(len(x) for x in data.values())
    sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for t, x in data.items():
            for start in range(0, len(x), 1024):
                xb = (x[start:start + 1024].float() / 255 - mean) / std
                head_logits(encoder(xb).float(), heads[t]).argmax(1)
    sync(device)
    return n / (time.perf_counter() - t0)


def synthetic_merge(N: int, K: int, device: torch.device, tau: float = 0.01) -> str:
    """TATR Ω + top-τ + merge on synthetic (K, N) tensors; returns a note."""
    from tatr_core.merge import merge
    from tatr_core.vectors import ParamLayout, TaskVectors

    layout = ParamLayout(("w",), (torch.Size([N]),), (0,), N)
    g = torch.Generator(device=device).manual_seed(0)
    tv = TaskVectors(layout, torch.randn(N, generator=g, device=device), torch.randn(K, N, generator=g, device=device),
                     [f"t{k}" for k in range(K)], {"w": torch.empty(0)})
    grads = torch.rand(K, N, generator=g, device=device)
    t0 = time.perf_counter()
    res = merge(tv, "tatr", lam=0.3, tau=tau, sensitivity="gradient", grads=grads)
    sync(device)
    return f"merge {time.perf_counter() - t0:.2f} s, {res.excluded:,} excluded"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--images", type=int, default=100, help="images per class and split (default 100: 1000 per task)")
    ap.add_argument("--exemplars", type=int, default=128)
    ap.add_argument("--sample", type=int, default=200, help="images per task for the sweep, conflict matrix and landscape")
    ap.add_argument("--grid", type=int, default=15, help="landscape points per axis")
    ap.add_argument("--taus", default="0,0.01,0.02,0.05,0.1,0.2,0.3", help="the τ sweep's points (default: 7)")
    ap.add_argument("--skip-large", action="store_true", help="leave out the ViT-L/14-sized merges")
    ap.add_argument("--zoo-dir", default=None, help="write (or reuse) the zoo here")
    ap.add_argument("--out", default=None, help="rewrite the table into this Markdown file after every step")
    args = ap.parse_args()
    global OUT_FILE
    OUT_FILE = Path(args.out) if args.out else None

    from tatr_core.analysis.components import loss_landscape
    from tatr_core.analysis.conflict import conflict_matrix
    from tatr_core.analysis.sweeps import sweep
    from tatr_core.evaluate import Evaluator, default_device
    from tatr_core.gradients import compute_task_gradients
    from tatr_core.merge import merge
    from tatr_core.trust_region import count_for_fraction, selection_method, sensitivity, top_k_mask
    from tatr_core.zoo import manifest as manifest_zoo

    device = default_device()
    root = Path(args.zoo_dir or tempfile.mkdtemp(prefix="tatr-realscale-"))
    root.mkdir(parents=True, exist_ok=True)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads")
    print(f"device: {name}; torch {torch.__version__}; cache {os.environ['TATR_CACHE']}")
    manifest = root / "zoo.json"
    if not manifest.exists():
        t0 = time.perf_counter()
        manifest = write_zoo(root, args.tasks, args.images, args.classes)
        print(f"wrote the zoo in {time.perf_counter() - t0:.0f} s: {root}")

    with step("zoo load, cold (task vectors built into the cache)", torch.device("cpu"), path=True):
        zoo = manifest_zoo.load(manifest)
    with step("zoo load, warm (task vectors mapped)", torch.device("cpu")):
        zoo = manifest_zoo.load(manifest)
    with step("task vectors to the compute device (memory rule)", device, path=True) as out:
        tv = zoo.task_vectors
        out["note"] = zoo.placement()
    mdev = tv.deltas.device  # where the merges compute
    n_test = sum(len(t.split("test")[1]) for t in zoo.tasks.values())
    print(f"{tv.K} tasks, N = {tv.N:,}, {n_test:,} test images; merges on {mdev}")

    with step("evaluator: encoder and data on the device (and the bf16 check on CUDA)", device, path=True) as out:
        ev = Evaluator(zoo)
        for t in zoo.task_names:
            ev.data(t, "test")
        out["note"] = f"bf16 autocast {'on' if ev.autocast else 'off'}"
    with step("eval, every test image (θ_pre)", device, path=True) as out:
        ev.evaluate(None)
    ours = n_test / ROWS[-1][1]
    lean = lean_loop(zoo, device)
    set_ratio(f"{ours:,.0f} img/s = {ours / lean:.0%} of a lean loop's {lean:,.0f}")
    print(f"    {ROWS[-1][2]}")

    with step(f"grads, {args.exemplars} exemplars per task", device, path=True):
        grads = compute_task_gradients(zoo, args.exemplars, 0)

    merge(tv, "tatr", lam=0.3, tau=0.01, sensitivity="gradient", grads=grads.abs_mean)  # warm-up (kernels, caches)
    with step("TATR Ω + top-τ + merge (tatr_core)", mdev, path=True) as out:
        res = merge(tv, "tatr", lam=0.3, tau=0.01, sensitivity="gradient", grads=grads.abs_mean)
    fast_s = ROWS[-1][1]
    pre = tv.layout.unflatten(tv.pretrained)
    fts = [tv.layout.unflatten(tv.pretrained + tv.deltas[k]) for k in range(tv.K)]
    gs = [tv.layout.unflatten(grads.abs_mean[k]) for k in range(tv.K)]
    with step("TATR, naive K² loop + full sort (same inputs, same device)", mdev) as out:
        naive_sd, naive_excluded = naive_tatr(pre, fts, gs, 0.01, 0.3)
    out["ratio"] = f"tatr_core {ROWS[-1][1] / fast_s:.1f}× faster; excluded {res.excluded:,} vs {naive_excluded:,}"
    set_ratio(out["ratio"])
    print(f"    {out['ratio']}")
    del pre, fts, gs, naive_sd

    omega = sensitivity(tv.deltas, "gradient", grads=grads.abs_mean)
    k = count_for_fraction(0.01, tv.N)
    seconds = {}
    for method in ("topk", "kthvalue"):  # the selection alone, both ways, on the same Ω
        top_k_mask(omega, k, method)  # warm-up
        sync(mdev)
        t0 = time.perf_counter()
        top_k_mask(omega, k, method)
        sync(mdev)
        seconds[method] = time.perf_counter() - t0
    used = selection_method(mdev)
    record((f"top-τ selection alone ({tv.N:,} values, τ = 1%)", seconds[used],
            f"topk {seconds['topk'] * 1e3:.1f} ms, kthvalue {seconds['kthvalue'] * 1e3:.1f} ms", "",
            f"{used} is what tatr_core uses on {mdev.type}"))
    print(f"  {ROWS[-1][0]}: {ROWS[-1][2]}; {ROWS[-1][4]}")
    del omega

    with step("TSV-M merge", mdev, path=True):
        merge(tv, "tsv")
    taus = [float(t) for t in args.taus.split(",")]
    with step(f"τ sweep, TATR, {len(taus)} points, {args.sample} img/task", device, path=True):
        sweep(zoo, "tatr", "tau", taus, exemplars=args.exemplars, sample=args.sample, evaluator=ev)
    with step(f"conflict matrix, Task Arithmetic (K + 1 merges), {args.sample} img/task", device, path=True):
        conflict_matrix(zoo, "task_arithmetic", sample=args.sample, evaluator=ev)
    step_size = round(1.4 / (args.grid - 1), 10)
    with step(f"landscape {args.grid}×{args.grid}, total loss, {args.sample} img/task", device, path=True):
        loss_landscape(zoo, None, step=step_size, exemplars=args.exemplars, sample=args.sample, evaluator=ev)

    record((f"the researcher's whole path ({len(PATH_SECONDS)} steps: zoo load to landscape)", sum(PATH_SECONDS), "",
            "", "the sum of the steps above but the naive reference and the selection timing"))

    if not args.skip_large:
        N = 304_293_888  # ViT-L/14's image tower
        for K in (8, 20):
            need = (2 * K + 4) * N * 4
            free = (torch.cuda.mem_get_info(device)[0] if device.type == "cuda"
                    else os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
            if need > free:
                record((f"ViT-L/14-sized TATR merge, K = {K}", float("nan"), "", "",
                        f"skipped: needs {need / 2**30:.0f} GiB, {free / 2**30:.0f} GiB free"))
                print(f"  {ROWS[-1][0]}: {ROWS[-1][4]}")
                continue
            with step(f"ViT-L/14-sized TATR merge, K = {K} (synthetic)", device) as out:
                try:
                    out["note"] = synthetic_merge(N, K, device)
                except (RuntimeError, torch.OutOfMemoryError) as exc:  # recorded, not hidden
                    out["note"] = f"failed: {str(exc).splitlines()[0][:160]}"

    print("\n" + table(), end="")


if __name__ == "__main__":
    main()
