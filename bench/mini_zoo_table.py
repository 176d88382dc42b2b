"""The README's mini-zoo table: per-task test accuracy of every method, and C_{j|i} for Task Arithmetic.

    .venv/bin/python bench/mini_zoo_table.py [--zoo mini] [--fixed] [--no-test-time]

Each row's λ (and τ for the TATR rows) is chosen on the validation split, as the papers do
(``--fixed``: every method's defaults); accuracies are on the test split.  Then the orderings the
real CLIP zoos show, each checked and printed as it holds or not.  Every number is computed here
(results are cached under cache/results/).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tatr_core.analysis.conflict import conflict_matrix  # noqa: E402
from tatr_core.analysis.sweeps import sweep  # noqa: E402
from tatr_core.analysis.tables import SENSITIVITY_ROWS, chosen_text, method_rows, method_table  # noqa: E402
from tatr_core.evaluate import Evaluator  # noqa: E402
from tatr_core.merge import REGISTRY, merge  # noqa: E402
from tatr_core.runs import evaluate_method  # noqa: E402
from tatr_core.zoo import load_zoo  # noqa: E402

from tatr_core.analysis.orderings import ordering_checks, print_checks, write_orderings  # noqa: E402

def shown(params: dict) -> str:
    """The parameters that matter for a row, compactly: λ=0.3, density=0.2, τ=1%, ..."""
    skip = ("seed", "sensitivity", "tau", "lr", "batch", "init")
    if params.get("base") == "task_arithmetic":
        skip += ("density",)  # DARE's density applies to its TIES base only
    parts = [f"{'λ' if k == 'lam' else k}={v:g}" if isinstance(v, float) else f"{k}={v}"
             for k, v in params.items() if k not in skip]
    if params.get("tau"):
        parts.append(f"τ={100 * params['tau']:g}%" + (f" {params['sensitivity']}" if params.get("sensitivity") != "gradient"
                                                      else ""))
    return ", ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default="mini")
    ap.add_argument("--fixed", action="store_true", help="every row at its method's defaults, not chosen on validation")
    ap.add_argument("--write", action="store_true",
                    help="store the orderings beside the shipped build of the zoo, for the Learn page")
    ap.add_argument("--no-test-time", action="store_true",
                    help="leave out the rows that train at test time (AdaMerging, Surgery): minutes instead of an hour")
    args = ap.parse_args()
    zoo = load_zoo(args.zoo)
    ev = Evaluator(zoo)
    names = zoo.task_names
    records = {}

    def print_table(rows: list[tuple]) -> dict:
        table = method_table(zoo, rows, evaluator=ev, tune=not args.fixed, test_time=not args.no_test_time)
        print("| method | " + " | ".join(names) + " | **avg** |")
        print("|---|" + "---:|" * (len(names) + 1))
        for row in table["rows"]:
            label = row["label"]
            kw = {**next(r[3] for r in rows if r[0] == label), **row["chosen"]}
            r = records[label] = evaluate_method(zoo, row["method"], evaluator=ev, **kw)  # cached: the table's record
            cells = [f"{100 * r['tasks'][t]['accuracy']:.1f}" for t in names]
            params = shown(r["params"]) + ("; chosen on val" if row["chosen"] else "")
            if "stored_fraction" in r:  # a task-aware row: what it keeps, against the K task vectors
                params += f"; stores {100 * r['stored_fraction']:.1f}% of the task vectors"
            indent = "&nbsp;&nbsp;" if row.get("base") else ""
            print(f"| {indent}{label}{f' ({params})' if params else ''} | " + " | ".join(cells)
                  + f" | **{100 * r['average_accuracy']:.1f}** |")
        return table

    table = print_table(method_rows())  # Table 1's rows, from the registry
    print("\nTable 6: TATR with each sensitivity")
    print_table(SENSITIVITY_ROWS)
    n = {t: len(zoo.tasks[t].split("test")[1]) for t in names}
    print("\n" + ("every row at its method's defaults" if args.fixed else
                   "λ (and τ for the TATR rows) chosen per row on the validation split: " + "; ".join(
                       f"{row['label']} {chosen_text(row)}" for row in table["rows"] if row["chosen"])))
    print("test images per task: " + ", ".join(f"{t} {n[t]}" for t in names))
    avg = {label: 100 * r["average_accuracy"] for label, r in records.items()}
    print(f"fine-tuning lifts the average {avg['Individual'] - avg['Pre-trained']:.1f} points above zero-shot; "
          f"Task Arithmetic recovers {100 * (avg['Task Arithmetic'] - avg['Pre-trained']) / (avg['Individual'] - avg['Pre-trained']):.0f}% "
          "of that gap")
    print("the TATR plug-in (τ chosen on val for the training-free methods, 1% for the data-using ones), "
          "average accuracy change: " + ", ".join(
        f"{label} {avg[label + ' & TATR'] - avg[label]:+.1f}" for label in avg if label + " & TATR" in avg))
    best_free = max((label for label, _, m, kw in method_rows() if label in avg and m not in ("pretrained", "individual")
                     and not REGISTRY[m].uses_data and "tau" not in kw and m != "tatr"), key=avg.get)
    print(f"best training-free method without TATR: {best_free} ({avg[best_free]:.1f})")
    free = {label for label, _, m, kw in method_rows() if label in avg
            and m not in ("pretrained", "individual") and not REGISTRY[m].uses_data}
    print("the orderings of the real CLIP zoos on this zoo:")
    aware = {label for label, _, m, kw in method_rows() if label in avg and m in REGISTRY and REGISTRY[m].task_aware}
    checks = ordering_checks(avg, n, free, aware)
    print_checks(checks)
    if args.write and not args.fixed and not args.no_test_time:
        where = write_orderings(zoo.key, checks, avg)
        print(f"orderings stored in {where}" if where else f"zoo {zoo.key} is not a shipped build: nothing stored")
    for label in [label for label in ("TW AdaMerging", "LW AdaMerging", "LW AdaMerging++") if label in records]:
        ent = records[label]["learned"]["entropy"]
        coef = [c for row in records[label]["learned"]["coefficients"] for c in row]
        print(f"{label}: mean prediction entropy {ent[0]:.2f} → {ent[-1]:.2f} nats; coefficients in "
              f"[{min(coef):.2f}, {max(coef):.2f}]")

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
    ta_c, tatr_c = (conflict_matrix(zoo, m, evaluator=ev)["total_loss"] for m in ("task_arithmetic", "tatr"))
    print(f"total C with the analysis module: Task Arithmetic {ta_c:+.2f}, TATR (τ = 1%) {tatr_c:+.2f}")
    tau = sweep(zoo, "tatr", "tau", evaluator=ev)
    print("TATR average accuracy against τ: " + ", ".join(
        f"{100 * p['value']:g}% {100 * p['average_accuracy']:.1f}" for p in tau["points"]))


if __name__ == "__main__":
    main()
