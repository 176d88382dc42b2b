"""Does prediction entropy point AdaMerging to the λ that validation picks?  (issue 27)

    .venv/bin/python bench/adamerging_entropy.py [--zoo mini] [--scan TASK] [--set head_scale='"clip"']

AdaMerging (Yang et al., 2024) learns its coefficients by minimising the merged model's prediction
entropy on unlabelled test images; it can only beat Task Arithmetic at its validation-chosen λ if lower
entropy goes with higher accuracy.  For Task Arithmetic at each λ of a grid (λ = 0: the pretrained
model) this prints, on the test split, the mean prediction entropy over tasks (what AdaMerging
minimises, at the zoo's own head scale) beside the mean accuracy, the λ each prefers, and, at λ = 0.3
(AdaMerging's start), the mean entropy of the right and of the wrong predictions.

``--scan TASK`` prints instead, with every task's coefficient at AdaMerging's start (0.3) but TASK's,
how the summed entropy AdaMerging minimises, TASK's own entropy, the other tasks' summed entropy and the
accuracies move with TASK's coefficient: why task-wise AdaMerging drives a coefficient to 0.

``--set field=JSON`` changes a field of a built-in zoo's recipe first (e.g. ``head_scale='"clip"'``,
the mini zoo before issue 27's head-scale change; that zoo is built, or taken from the cache, as any
recipe is).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from tatr_core.evaluate import Evaluator  # noqa: E402
from tatr_core.merge import merge  # noqa: E402
from tatr_core.models import head_logits  # noqa: E402
from tatr_core.zoo import load_zoo, mini  # noqa: E402

LAMBDAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)
SCAN = (0.0, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0)


@torch.inference_mode()
def logits_of(ev: Evaluator, params: dict, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The test split's logits under ``params``, through the evaluator's own data, normalisation and encoder."""
    images, labels = ev.data(task, "test")
    out = [head_logits(ev.features(params, ev.normalise(images[s:s + ev.batch_size])), ev.heads[task])
           for s in range(0, len(labels), ev.batch_size)]
    return torch.cat(out), labels


def predictions(ev: Evaluator, params: dict, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Each test prediction's entropy (nats; their mean is ``adamerging.entropy``'s) and whether it is right."""
    logits, labels = logits_of(ev, params, task)
    logp = logits.log_softmax(1)
    return -(logp.exp() * logp).sum(1), logits.argmax(1) == labels


def scan(ev: Evaluator, tv, names: list[str], task: str) -> None:
    """Task-wise coefficients at 0.3, ``task``'s varied: the entropies and accuracies AdaMerging trades."""
    k = names.index(task)
    print(f"| {task}'s coefficient | summed entropy | {task}'s entropy | others' summed entropy | "
          f"{task}'s accuracy (%) | others' mean accuracy (%) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for c in SCAN:
        coef = torch.full((len(names),), 0.3, dtype=tv.deltas.dtype)
        coef[k] = c
        params = ev.as_params(tv.pretrained + coef @ tv.deltas)
        ent, acc = {}, {}
        for t in names:
            h, ok = predictions(ev, params, t)
            ent[t], acc[t] = float(h.mean()), 100 * float(ok.float().mean())
        others = [t for t in names if t != task]
        print(f"| {c:g} | {sum(ent.values()):.3f} | {ent[task]:.3f} | {sum(ent[t] for t in others):.3f} | "
              f"{acc[task]:.1f} | {sum(acc[t] for t in others) / len(others):.1f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zoo", default="mini")
    ap.add_argument("--scan", metavar="TASK", help="vary one task's coefficient, the others at 0.3")
    ap.add_argument("--set", action="append", default=[], help="a field of the built-in zoo's recipe, name=JSON value")
    args = ap.parse_args()
    if args.set:
        changes = {k: json.loads(v) for k, v in (a.split("=", 1) for a in args.set)}
        mini.PRESETS[args.zoo] = dataclasses.replace(mini.PRESETS[args.zoo], **changes)
    zoo = load_zoo(args.zoo)
    tv, names = zoo.task_vectors, list(zoo.tasks)
    ev = Evaluator(zoo)
    print(f"zoo {zoo.key}: {len(names)} tasks, {sum(len(zoo.tasks[t].split('test')[1]) for t in names)} test images; "
          f"head norm (the logit scale) {float(zoo.tasks[names[0]].head.float().norm(dim=1).mean()):.1f}")
    if args.scan:
        if args.scan not in names:
            raise SystemExit(f"--scan: no task '{args.scan}' in zoo {args.zoo}; its tasks: {', '.join(names)}")
        scan(ev, tv, names, args.scan)
        return
    print("| λ | mean entropy (nats) | mean accuracy (%) |")
    print("|---:|---:|---:|")
    rows = {}
    for lam in LAMBDAS:
        params = ev.as_params(merge(tv, "task_arithmetic", lam=lam).theta)
        ent, acc, right, wrong = [], [], [], []
        for t in names:
            h, ok = predictions(ev, params, t)
            ent.append(float(h.mean()))
            acc.append(float(ok.float().mean()))
            right.append(float(h[ok].mean()) if ok.any() else float("nan"))
            wrong.append(float(h[~ok].mean()) if (~ok).any() else float("nan"))
        rows[lam] = (sum(ent) / len(ent), 100 * sum(acc) / len(acc), sum(right) / len(right), sum(wrong) / len(wrong))
        print(f"| {lam:g} | {rows[lam][0]:.3f} | {rows[lam][1]:.1f} |", flush=True)
    by_entropy = min(rows, key=lambda lam: rows[lam][0])
    by_accuracy = max(rows, key=lambda lam: rows[lam][1])
    curves = torch.tensor([[rows[lam][i] for lam in LAMBDAS] for i in (0, 1)], dtype=torch.float64)  # entropy, accuracy
    r = float(torch.corrcoef(curves)[0, 1])
    print(f"lowest entropy at λ {by_entropy:g}; highest test accuracy at λ {by_accuracy:g}; "
          f"correlation of entropy with accuracy over the grid {r:+.2f} (AdaMerging needs it negative)")
    print(f"at λ 0.3: right predictions' mean entropy {rows[0.3][2]:.3f} nats, wrong ones' {rows[0.3][3]:.3f}")


if __name__ == "__main__":
    main()
