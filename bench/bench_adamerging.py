"""AdaMerging's learning loop against a lean one, side by side in one process, on the built-in zoos.

    .venv/bin/python bench/bench_adamerging.py [--zoos micro,mini] [--steps 30]

The lean loop is the smallest correct AdaMerging step: the merged parameters built once per step,
tensor by tensor (θ_l = θ_pre,l + Σ_k λ_kl Δ_k,l), one ``torch.func.functional_call`` per task on
the same batches from the same seeded generator, the summed mean entropies, Adam.  The project's
loop (``tatr_core.merge.adamerging.learn_coefficients``) is timed on the same task vectors for the
same number of steps, for AdaMerging (layer- and task-wise) and AdaMerging++ (TIES-processed task
vectors).  Prints seconds per step of each, their ratio (project / lean; the target is ≤ 1.5), the
largest difference between the coefficients the two learned (they are the same computation), and
where the lean step's time goes (building the merged weights, forward, backward, Adam).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def lean(zoo, deltas, names, params, phases: dict | None = None) -> list[list[float]]:
    """The lean reference loop; returns the clamped coefficients.  ``phases`` collects seconds per phase."""
    import torch
    from torch.func import functional_call

    from tatr_core.merge.adamerging import entropy
    from tatr_core.merge.fitting import unlabelled_batch
    from tatr_core.models import channel_stats, head_logits

    tv = zoo.task_vectors
    encoder = zoo.make_encoder().eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    items = list(tv.layout.items())
    pre = {k: tv.pretrained[sl].view(shape).float() for k, sl, shape in items}
    D = {k: deltas[:, sl].reshape(len(names), *shape).float() for k, sl, shape in items}
    layer = params["granularity"] == "layer"
    coef = torch.full((len(names), len(items) if layer else 1), params["init"], requires_grad=True)
    opt = torch.optim.Adam([coef], lr=params["lr"])
    mean, std = channel_stats(zoo.mean, zoo.std)
    images = {t: zoo.tasks[t].split("test")[0] for t in names}
    heads = {t: zoo.tasks[t].head.float() for t in names}
    generator = torch.Generator().manual_seed(int(params["seed"]))
    phases = phases if phases is not None else {}
    for _ in range(params["steps"]):
        t0 = time.perf_counter()
        c = coef.clamp(0.0, 1.0)
        weights = {k: pre[k] + torch.tensordot(c[:, n if layer else 0], D[k], dims=1) for n, (k, _, _) in enumerate(items)}
        t1 = time.perf_counter()
        loss = torch.zeros(())
        for t in names:
            drawn = [unlabelled_batch(images[t], params["batch"], generator, mean, std) for _ in range(params["batches"])]
            logits = head_logits(functional_call(encoder, weights, (torch.cat(drawn),), strict=False), heads[t])
            loss = loss + sum(entropy(chunk) for chunk in logits.split([len(x) for x in drawn]))
        t2 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        for name, dt in (("merged weights", t1 - t0), ("forward", t2 - t1), ("backward", t3 - t2), ("Adam", t4 - t3)):
            phases[name] = phases.get(name, 0.0) + dt
    return coef.detach().clamp(0.0, 1.0).tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zoos", default="micro,mini")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3, help="best of this many timings of each loop")
    args = ap.parse_args()
    os.environ.setdefault("TATR_CACHE", tempfile.mkdtemp(prefix="tatr-bench-"))

    import torch

    from tatr_core.merge.adamerging import learn_coefficients
    from tatr_core.merge.ties import ties_processed
    from tatr_core.zoo import load_zoo

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps per timing, "
          f"best of {args.repeats}")
    print(f"{'zoo':6s} {'variant':22s} {'project s/step':>15s} {'lean s/step':>12s} {'ratio':>6s} {'max |Δλ|':>9s}")
    for name in args.zoos.split(","):
        zoo = load_zoo(name)
        tv, names = zoo.task_vectors, zoo.task_names
        variants = [("AdaMerging layer-wise", "layer", tv.deltas), ("AdaMerging task-wise", "task", tv.deltas),
                    ("AdaMerging++ layer-wise", "layer", ties_processed(tv.deltas, 0.2))]
        for label, granularity, deltas in variants:
            params = {"granularity": granularity, "init": 0.3, "lr": 1e-3, "steps": args.steps, "batch": 16,
                      "batches": 2, "seed": 0}
            best_p = best_l = float("inf")
            for _ in range(args.repeats):
                t = time.perf_counter()
                ours = learn_coefficients(zoo, tv, deltas, names, params, lambda f, m: None)["coefficients"]
                best_p = min(best_p, time.perf_counter() - t)
                t = time.perf_counter()
                ref = lean(zoo, deltas, names, params)
                best_l = min(best_l, time.perf_counter() - t)
            diff = max(abs(a - b) for ra, rb in zip(ours, ref) for a, b in zip(ra, rb))
            print(f"{name:6s} {label:22s} {best_p / args.steps:15.4f} {best_l / args.steps:12.4f} "
                  f"{best_p / best_l:6.2f} {diff:9.1e}")
        phases: dict = {}
        lean(zoo, tv.deltas, names, {"granularity": "layer", "init": 0.3, "lr": 1e-3, "steps": args.steps,
                                     "batch": 16, "batches": 2, "seed": 0}, phases)
        total = sum(phases.values())
        print(f"{name:6s} lean layer-wise step: " + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in phases.items())
              + f" of {total / args.steps:.4f} s")


if __name__ == "__main__":
    main()
