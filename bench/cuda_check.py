"""Check the CUDA paths against the CPU on a GPU machine, and time the data-using methods at
ViT-B/32 scale.  Prints one line per check; exits 1 if a check fails.

    python bench/cuda_check.py [--zoo micro] [--vitb32-steps 20]

1. ``import tatr_core`` before torchvision on a CUDA build: torchvision's own operators still work.
2. The evaluator on CUDA (bf16 autocast behind its float32 agreement check) against the CPU.
3. Per-task gradients on CUDA against the CPU.
4. Fisher, RegMean, AdaMerging and Surgery fitted on CUDA against the same fits on the CPU.
5. ViT-B/32 (random weights, K = 8 synthetic task vectors): seconds per AdaMerging step (8 tasks ×
   16 images), per Fisher exemplar and per RegMean exemplar on the GPU.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tatr_core  # noqa: E402,F401  (the compat shim first, as in the project)
import torch  # noqa: E402

FAILED = []


def check(name: str, ok: bool, detail: str) -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)
    if not ok:
        FAILED.append(name)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--zoo", default="micro")
    ap.add_argument("--vitb32-steps", type=int, default=20)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")

    import torchvision
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float32, device="cuda")
    keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7], device="cuda"), 0.5)
    check("torchvision ops after tatr_core", keep.tolist() == [0, 2], f"nms kept {keep.tolist()}")

    import tatr_core.merge.adamerging as am
    import tatr_core.merge.fisher as fi
    import tatr_core.merge.regmean as rm
    import tatr_core.merge.surgery as su
    from tatr_core.evaluate import Evaluator
    from tatr_core.gradients import compute_task_gradients
    from tatr_core.merge import merge
    from tatr_core.runs import method_params
    from tatr_core.zoo import load_zoo

    zoo = load_zoo(args.zoo)
    cpu, gpu = Evaluator(zoo, "cpu"), Evaluator(zoo, "cuda")
    theta = merge(zoo.task_vectors, "task_arithmetic").theta
    a, b = cpu.evaluate(theta), gpu.evaluate(theta)
    worst = max(abs(a[t].accuracy - b[t].accuracy) for t in a)
    check("evaluator CUDA vs CPU", worst <= 0.02,
          f"bf16 autocast {'on' if gpu.autocast else 'off (disagreed with float32)'}, largest accuracy gap {100 * worst:.2f} points, "
          f"loss {a[zoo.task_names[0]].loss:.4f} vs {b[zoo.task_names[0]].loss:.4f}")

    g_cpu = compute_task_gradients(zoo, 16, 0, device="cpu", use_cache=False)
    g_gpu = compute_task_gradients(zoo, 16, 0, device="cuda", use_cache=False)
    rel = float((g_cpu.abs_mean - g_gpu.abs_mean).norm() / g_cpu.abs_mean.norm())
    check("per-task gradients CUDA vs CPU", rel < 1e-3, f"relative difference {rel:.2e}")

    runs = {"fisher": {"exemplars": 16}, "regmean": {"exemplars": 16}, "adamerging": {"steps": 50},
            "adamerging++": {"steps": 50}, "surgery": {"steps": 100}}
    for method, kw in runs.items():
        accs = {}
        for device in ("cpu", "cuda"):
            for mod in (am, fi, rm, su):  # where the fit runs
                mod.device_of = (lambda d: lambda device=None: torch.device(d))(device)
            t = time.perf_counter()
            params = method_params(method, **kw)
            res = _fit_uncached(zoo, method, params)
            accs[device] = (sum(r.accuracy for r in cpu.evaluate(res.theta, feature_maps={
                k: v.to("cpu") for k, v in res.extras.get("feature_maps", {}).items()}).values()) / len(zoo.task_names),
                time.perf_counter() - t)
        gap = abs(accs["cpu"][0] - accs["cuda"][0])
        check(f"{method} fitted on CUDA vs CPU", gap <= 0.03,
              f"average accuracy {100 * accs['cpu'][0]:.2f}% (CPU, {accs['cpu'][1]:.1f} s) vs "
              f"{100 * accs['cuda'][0]:.2f}% (CUDA, {accs['cuda'][1]:.1f} s)")

    vitb32(args.vitb32_steps)
    print("FAILED: " + ", ".join(FAILED) if FAILED else "all checks passed")
    return 1 if FAILED else 0


def _fit_uncached(zoo, method, params):
    """The method's fit with its on-disk caches bypassed (a fresh temporary cache root)."""
    import tempfile

    from tatr_core import options
    from tatr_core.runs import merge_tasks

    with tempfile.TemporaryDirectory() as d, options.using(cache_root=Path(d)):
        return merge_tasks(zoo, method, params, {})


def vitb32(steps: int) -> None:
    """Seconds per AdaMerging step, Fisher exemplar and RegMean exemplar for ViT-B/32 on the GPU."""
    from tatr_core.merge.adamerging import entropy, merged_theta
    from tatr_core.merge.fisher import diagonal_fisher
    from tatr_core.merge.regmean import layer_grams
    from tatr_core.models import channel_stats, create_image_encoder, head_logits
    from tatr_core.vectors import TaskVectors
    from torch.func import functional_call

    dev = torch.device("cuda")
    enc = create_image_encoder("ViT-B-32").to(dev).eval()
    for p in enc.parameters():
        p.requires_grad_(False)
    sd = {k: v.detach().cpu() for k, v in enc.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    fts = [{k: v + 1e-3 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in sd.items()}
           for _ in range(8)]
    tv = TaskVectors.from_state_dicts(sd, fts)
    pre, D = tv.pretrained.to(dev), tv.deltas.to(dev)
    coef = torch.full((8, len(tv.layout)), 0.3, device=dev, requires_grad=True)
    opt = torch.optim.Adam([coef], lr=1e-3)
    heads = torch.nn.functional.normalize(torch.randn(8, 10, 512, device=dev), dim=-1) * 100
    images = torch.randint(0, 255, (8, 16, 3, 224, 224), dtype=torch.uint8, device=dev)
    mean, std = channel_stats((0.48, 0.46, 0.41), (0.27, 0.26, 0.28), dev)

    def step():
        w = tv.layout.unflatten(merged_theta(pre, D, coef, tv.layout))
        loss = sum(entropy(head_logits(functional_call(enc, w, ((images[k].float() / 255 - mean) / std,), strict=False),
                                       heads[k])) for k in range(8))
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    per = (time.perf_counter() - t) / steps
    print(f"ViT-B/32 LW AdaMerging: {per * 1000:.0f} ms per step (8 tasks × 16 images), 500 steps ≈ {500 * per:.0f} s, "
          f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True)

    weights = {k: v.to(dev) for k, v in fts[0].items() if v.is_floating_point()}
    x = images[0, :8]
    torch.cuda.synchronize()
    t = time.perf_counter()
    diagonal_fisher(enc, weights, heads[0], x, mean, std)
    torch.cuda.synchronize()
    print(f"ViT-B/32 Fisher (10 classes, exact): {(time.perf_counter() - t) / 8:.2f} s per exemplar", flush=True)
    t = time.perf_counter()
    layer_grams(enc, weights, images[0], mean, std)
    torch.cuda.synchronize()
    print(f"ViT-B/32 RegMean Grams: {(time.perf_counter() - t) / 16 * 1000:.1f} ms per exemplar", flush=True)


if __name__ == "__main__":
    sys.exit(main())
