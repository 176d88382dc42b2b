"""The README's mini-zoo table: per-task test accuracy of every method, and C_{j|i} for Task Arithmetic.

    .venv/bin/python bench/mini_zoo_table.py [--zoo mini]

Every number is computed here (results are cached under cache/results/).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tatr_core.evaluate import Evaluator  # noqa: E402
from tatr_core.merge import merge  # noqa: E402
from tatr_core.runs import evaluate_method  # noqa: E402
from tatr_core.zoo import load_zoo  # noqa: E402

ROWS = [
    ("Zero-shot (pretrained)", "pretrained", {}),
    ("Individual (fine-tuned)", "individual", {}),
    ("Weight averaging", "average", {}),
    ("Task Arithmetic (λ=0.3)", "task_arithmetic", {}),
    ("TIES (λ=0.3, density 0.2)", "ties", {}),
    ("TSV-M (λ=1.0)", "tsv", {}),
    ("TATR zero-shot (τ=1%)", "tatr", {"sensitivity": "zero-shot"}),
    ("TATR (τ=1%, 128 exemplars)", "tatr", {}),
    ("TIES & TATR (τ=1%)", "ties", {"tau": 0.01}),
    ("TSV-M & TATR (τ=1%)", "tsv", {"tau": 0.01}),
    ("DARE (p=0.5 on TA, λ=0.3)", "dare", {}),
    ("DARE & TATR (τ=1%)", "dare", {"tau": 0.01}),
    ("Consensus TA (k=2, λ_t=0.6, λ=0.3)", "consensus", {}),
    ("Consensus TA & TATR (τ=1%)", "consensus", {"tau": 0.01}),
    ("MagMax (λ=0.5)", "magmax", {}),
    ("MagMax & TATR (τ=1%)", "magmax", {"tau": 0.01}),
    ("PCB-Merging (r=0.1, λ=1.0)", "pcb", {}),
    ("PCB-Merging & TATR (τ=1%)", "pcb", {"tau": 0.01}),
    ("Iso-C (α=1.0)", "iso_c", {}),
    ("Iso-C & TATR (τ=1%)", "iso_c", {"tau": 0.01}),
    ("Iso-CTS (α=1.0, f=0.8)", "iso_cts", {}),
    ("Iso-CTS & TATR (τ=1%)", "iso_cts", {"tau": 0.01}),
    ("Fisher merging (128 exemplars)", "fisher", {}),
    ("Fisher merging & TATR (τ=1%)", "fisher", {"tau": 0.01}),
    ("RegMean (α=0.9, 128 exemplars)", "regmean", {}),
    ("RegMean & TATR (τ=1%)", "regmean", {"tau": 0.01}),
    ("TW AdaMerging (500 steps)", "adamerging", {"granularity": "task"}),
    ("TW AdaMerging & TATR (τ=1%)", "adamerging", {"granularity": "task", "tau": 0.01}),
    ("LW AdaMerging (500 steps)", "adamerging", {"granularity": "layer"}),
    ("LW AdaMerging & TATR (τ=1%)", "adamerging", {"granularity": "layer", "tau": 0.01}),
    ("LW AdaMerging++ (density 0.2)", "adamerging++", {}),
    ("LW AdaMerging++ & TATR (τ=1%)", "adamerging++", {"tau": 0.01}),
    ("Representation Surgery (on TA λ=0.3, rank 16)", "surgery", {}),
    ("Surgery & TATR (τ=1%)", "surgery", {"tau": 0.01}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default="mini")
    args = ap.parse_args()
    zoo = load_zoo(args.zoo)
    ev = Evaluator(zoo)
    names = zoo.task_names
    print("| method | " + " | ".join(names) + " | **avg** |")
    print("|---|" + "---:|" * (len(names) + 1))
    for label, method, kw in ROWS:
        r = evaluate_method(zoo, method, evaluator=ev, **kw)
        cells = [f"{100 * r['tasks'][t]['accuracy']:.1f}" for t in names]
        print(f"| {label} | " + " | ".join(cells) + f" | **{100 * r['average_accuracy']:.1f}** |")
    n = {t: len(zoo.tasks[t].split("test")[1]) for t in names}
    print("\ntest images per task: " + ", ".join(f"{t} {n[t]}" for t in names))

    # C_{j|i} = L_j(TA of all K) − L_j(TA without i), λ = 0.3 (Eq. 3), in loss and in accuracy points
    tv = zoo.task_vectors
    full = ev.evaluate(merge(tv, "task_arithmetic", lam=0.3).theta)
    print("\nKnowledge conflict C_{j|i} for Task Arithmetic (λ=0.3): loss increase of task j (row) caused by adding task i (column)")
    print("| j \\ i | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    rows, total = {}, 0.0
    for i, ti in enumerate(names):
        without = ev.evaluate(merge(tv.subset([k for k in range(tv.K) if k != i]), "task_arithmetic", lam=0.3).theta)
        for tj in names:
            if tj != ti:
                c = full[tj].loss - without[tj].loss
                rows.setdefault(tj, {})[ti] = (c, 100 * (without[tj].accuracy - full[tj].accuracy))
                total += c
    for tj in names:
        print(f"| {tj} | " + " | ".join("—" if ti == tj else f"{rows[tj][ti][0]:+.2f}" for ti in names) + " |")
    worst = max(((tj, ti) for tj in names for ti in names if ti != tj), key=lambda p: rows[p[0]][p[1]][0])
    c, acc = rows[worst[0]][worst[1]]
    print(f"\ntotal C = {total:+.2f}; largest: adding {worst[1]} raises {worst[0]}'s loss by {c:+.2f} "
          f"and costs it {acc:.1f} accuracy points")


if __name__ == "__main__":
    main()
