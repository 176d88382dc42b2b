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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tatr_core.analysis.tables import method_rows  # noqa: E402
from tatr_core.analysis.tuning import tune  # noqa: E402
from tatr_core.evaluate import Evaluator  # noqa: E402
from tatr_core.runs import evaluate_method  # noqa: E402
from tatr_core.zoo import mini  # noqa: E402

from tatr_core.analysis.orderings import ordering_checks, print_checks  # noqa: E402

#: the data-free rows a probe computes (Table 1's labels); TSV-M must be the best of those without TATR
DATA_FREE = ["Task Arithmetic", "Ties-Merging", "TSV-M", "TATR"]


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
    table = {label: (method, kw) for label, _, method, kw in method_rows()}

    def row(label: str) -> None:
        method, params = table[label]
        chosen = tune(zoo, method, evaluator=ev, **params)["chosen"]
        rec = evaluate_method(zoo, method, evaluator=ev, **{**params, **chosen})
        rows[label] = rec
        cells = " ".join(f"{100 * rec['tasks'][t]['accuracy']:5.1f}" for t in names)
        print(f"{label:24s} {cells}  avg {100 * rec['average_accuracy']:5.1f}  {chosen or ''}", flush=True)

    print(f"{'':24s} " + " ".join(f"{t[:5]:>5s}" for t in names))
    for label in ["Pre-trained", "Individual"] + DATA_FREE + (["TW AdaMerging", "LW AdaMerging"] if args.adamerging else []):
        row(label)
    acc = {k: 100 * r["average_accuracy"] for k, r in rows.items()}
    tests = {t: int(zoo.tasks[t].split("test")[1].numel()) for t in names}
    print_checks(ordering_checks(acc, tests, set(DATA_FREE)))


if __name__ == "__main__":
    main()
