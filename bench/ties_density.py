"""Why TIES trails Task Arithmetic on the mini zoo: its λ past the tuning grid, and its density.  (issue 27)

    .venv/bin/python bench/ties_density.py [--zoo mini]

TIES-Merging (Yadav et al., 2023) keeps each task vector's top-``density`` entries by magnitude (20%),
elects a sign per entry and merges the agreeing entries (``merge_func`` sum, the protocol of the TATR
paper's TIES rows). On the mini zoo its validation-chosen λ is 1.0, the top of the tuning grid
(0.1 … 1.0), so this prints, in order:

1. TIES at λ 0.6 … 2.0 on validation and test, with ``merge_func`` sum and mean (the TIES paper's
   disjoint mean): whether the grid's edge cut it short;
2. per density, the λ of 0.4 … 1.0 that validation picks and its test accuracy;
3. the share of each task vector's squared norm that its top-density entries hold (what trimming keeps).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from tatr_core.evaluate import Evaluator  # noqa: E402
from tatr_core.merge.ties import trim_masks  # noqa: E402
from tatr_core.runs import evaluate_method  # noqa: E402
from tatr_core.zoo import load_zoo  # noqa: E402

LAMS = (0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0)
DENSITIES = (0.1, 0.2, 0.4, 0.6, 0.8, 1.0)
PICK = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def accuracy(zoo, evaluator, split: str, **params) -> float:
    return 100 * evaluate_method(zoo, "ties", split=split, evaluator=evaluator, **params)["average_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", default="mini")
    args = parser.parse_args()
    zoo = load_zoo(args.zoo)
    evaluator = Evaluator(zoo)

    print("1. TIES (density 0.2) past the grid's top")
    print(f"{'merge_func':>10s} {'λ':>4s} {'val':>6s} {'test':>6s}")
    for func in ("sum", "mean"):
        for lam in LAMS:
            val, test = (accuracy(zoo, evaluator, split, lam=lam, merge_func=func) for split in ("val", "test"))
            print(f"{func:>10s} {lam:4.1f} {val:6.1f} {test:6.1f}", flush=True)

    print("\n2. TIES (sum) per density, λ picked on validation from 0.4 … 1.0")
    print(f"{'density':>7s} {'λ':>4s} {'val':>6s} {'test':>6s}")
    for density in DENSITIES:
        val, lam = max((accuracy(zoo, evaluator, "val", lam=lam, density=density), -lam) for lam in PICK)
        test = accuracy(zoo, evaluator, "test", lam=-lam, density=density)
        print(f"{density:7.1f} {-lam:4.1f} {val:6.1f} {test:6.1f}", flush=True)

    print("\n3. share of ‖Δ_k‖² in the top-density entries of Δ_k (mean over tasks, min … max)")
    deltas = zoo.task_vectors.deltas.to(torch.float64)
    energy = deltas.pow(2)
    total = energy.sum(1)
    for density in DENSITIES:
        kept = (energy * trim_masks(deltas, density)).sum(1) / total  # the entries TIES' trim keeps
        print(f"{density:7.1f} {100 * kept.mean():6.1f}%  ({100 * kept.min():.1f} … {100 * kept.max():.1f})")


if __name__ == "__main__":
    main()
