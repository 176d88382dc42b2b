"""Try a mini-zoo recipe: build it (in the cache, keyed by the recipe) and print the orderings of issue 12.

    .venv/bin/python bench/recipe_probe.py --set finetune_lr=1e-4 --set finetune_steps=300 [--adamerging]

``--set name=value`` overrides a field of the ``mini`` recipe (JSON values: numbers, lists, objects;
``tasks`` as a comma-separated list).  The script prints, on the test split with λ (and τ) chosen on
the validation split: zero-shot, individual, Task Arithmetic, TIES, TSV-M, TATR (τ on val) and, with
``--adamerging``, task- and layer-wise AdaMerging; then each ordering as it holds or not.  This is how
recipes were compared (BENCHMARKS.md lists the ones tried); every number is computed here, with each
task vector's norm relative to θ_pre's.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tatr_core.analysis.tuning import tune  # noqa: E402
from tatr_core.evaluate import Evaluator  # noqa: E402
from tatr_core.runs import evaluate_method  # noqa: E402
from tatr_core.zoo import mini  # noqa: E402


def parse_override(text: str) -> tuple[str, object]:
    name, _, raw = text.partition("=")
    if name == "tasks":
        return name, tuple(raw.split(","))
    try:
        return name, json.loads(raw)
    except json.JSONDecodeError:
        return name, raw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", action="append", default=[], help="recipe field override, name=value")
    ap.add_argument("--base", default="mini")
    ap.add_argument("--adamerging", action="store_true")
    args = ap.parse_args()
    overrides = dict(parse_override(s) for s in args.set)
    recipe = dataclasses.replace(mini.PRESETS[args.base], **overrides)
    mini.PRESETS["probe"] = recipe
    t0 = time.perf_counter()
    zoo = mini.load("probe", lambda f, m: None)
    print(f"recipe {overrides or '(the mini preset)'}: zoo {zoo.key}, built in {zoo.info['build_seconds']} s "
          f"(loaded in {time.perf_counter() - t0:.0f} s)")
    ev = Evaluator(zoo)
    names = zoo.task_names
    tv = zoo.task_vectors
    ratios = (tv.deltas.double().norm(dim=1) / tv.pretrained.double().norm()).tolist()
    print("task-vector norm / θ_pre norm: " + ", ".join(f"{t} {100 * r:.1f}%" for t, r in zip(names, ratios)))
    rows: dict[str, dict] = {}

    def row(label: str, method: str, **params) -> None:
        chosen = tune(zoo, method, evaluator=ev, **params)["chosen"]
        rec = evaluate_method(zoo, method, evaluator=ev, **{**params, **chosen})
        rows[label] = rec
        cells = " ".join(f"{100 * rec['tasks'][t]['accuracy']:5.1f}" for t in names)
        print(f"{label:24s} {cells}  avg {100 * rec['average_accuracy']:5.1f}  {chosen or ''}", flush=True)

    print(f"{'':24s} " + " ".join(f"{t[:5]:>5s}" for t in names))
    row("zero-shot", "pretrained")
    row("individual", "individual")
    row("task arithmetic", "task_arithmetic")
    row("ties", "ties")
    row("tsv", "tsv")
    row("tatr", "tatr")
    if args.adamerging:
        row("tw adamerging", "adamerging", granularity="task")
        row("lw adamerging", "adamerging", granularity="layer")
    acc = {k: 100 * r["average_accuracy"] for k, r in rows.items()}
    gap = acc["individual"] - acc["zero-shot"]
    checks = [
        ("individual ≥ zero-shot + 25", gap >= 25, f"+{gap:.1f}"),
        ("TA recovers ≥ 35% of the gap", (acc["task arithmetic"] - acc["zero-shot"]) / gap >= 0.35,
         f"{100 * (acc['task arithmetic'] - acc['zero-shot']) / gap:.0f}%"),
        ("TIES ≥ TA", acc["ties"] >= acc["task arithmetic"], f"{acc['ties']:.1f} vs {acc['task arithmetic']:.1f}"),
        ("TATR > TA", acc["tatr"] > acc["task arithmetic"], f"{acc['tatr']:.1f}"),
        ("TSV-M ≥ TIES, TA", acc["tsv"] >= max(acc["ties"], acc["task arithmetic"]), f"{acc['tsv']:.1f}"),
    ]
    if args.adamerging:
        checks.append(("AdaMerging TW, LW > TA", min(acc["tw adamerging"], acc["lw adamerging"]) > acc["task arithmetic"],
                       f"{acc['tw adamerging']:.1f}, {acc['lw adamerging']:.1f}"))
    tests = {t: int(zoo.tasks[t].split("test")[1].numel()) for t in names}
    checks.append(("every task ≥ 200 test images", min(tests.values()) >= 200, f"fewest {min(tests.values())}"))
    for text, ok, value in checks:
        print(f"  {'holds' if ok else 'DOES NOT HOLD'}: {text} ({value})")


if __name__ == "__main__":
    main()
