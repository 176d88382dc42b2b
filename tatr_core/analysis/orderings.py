"""The orderings the real CLIP zoos show (issues 12 and 27), checked on a zoo's average accuracies.

Used by ``bench/mini_zoo_table.py`` (the README's table, every row) and ``bench/recipe_probe.py`` (a
recipe tried with a few rows): each check needs only its own rows, and one whose rows were not
computed is left out.  Rows are named by the labels of Table 1 (``tatr_core.analysis.tables.method_rows``).

The checks need every method's row with λ chosen on validation, AdaMerging and Surgery included: about
half an hour on the mini zoo, too long for a page.  So ``mini_zoo_table.py --write`` stores them beside
the shipped build of the zoo (:func:`write_orderings`), keyed by the zoo, and the Learn page shows
them (:func:`stored_orderings`) for that zoo only.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

#: the file beside a shipped build that holds its checked orderings
ORDERINGS_FILE = "orderings.json"

SURGERY = "Representation Surgery"
#: the one-model data-free merges the TSV paper puts below TSV-M (later methods, plug-in rows and the
#: task-aware rows, which keep a model per task, are no part of that claim)
TSV_COMPARED = {"Weight Averaging", "Task Arithmetic", "Ties-Merging", "DARE", "Consensus TA", "MagMax", "PCB-Merging"}


def ordering_checks(avg: dict[str, float], test_images: dict[str, int], data_free: set[str],
                    task_aware: set[str] = frozenset()) -> list[tuple[str, bool, str]]:
    """``(what, holds, detail)`` for each ordering whose rows ``avg`` holds (average test accuracy in %
    by row label).  ``data_free``: the labels of the data-free merges computed (TSV-M must be the best
    of those without TATR); ``test_images``: the test split's size per task; ``task_aware``: the labels
    of the rows that keep a model per task (EMR-Merging, TSV-C), which Surgery is not compared with:
    the TATR paper's table, where Surgery is the best merge, has none of them."""
    have = avg.__contains__
    checks = []
    if have("Individual") and have("Pre-trained"):
        gap = avg["Individual"] - avg["Pre-trained"]
        checks.append(("individual ≥ zero-shot + 25 points", gap >= 25, f"{gap:+.1f}"))
        if have("Task Arithmetic"):
            checks.append(("Task Arithmetic recovers ≥ 35% of the gap", avg["Task Arithmetic"] - avg["Pre-trained"] >= 0.35 * gap,
                           f"{100 * (avg['Task Arithmetic'] - avg['Pre-trained']) / gap:.0f}%"))
    if have("Ties-Merging") and have("Task Arithmetic"):
        checks.append(("TIES ≥ Task Arithmetic", avg["Ties-Merging"] >= avg["Task Arithmetic"],
                       f"{avg['Ties-Merging']:.1f} vs {avg['Task Arithmetic']:.1f}"))
    if have("TATR") and have("Task Arithmetic"):
        checks.append(("TATR > Task Arithmetic", avg["TATR"] > avg["Task Arithmetic"],
                       f"{avg['TATR']:.1f} vs {avg['Task Arithmetic']:.1f}"))
    without_tatr = {label: avg[label] for label in data_free if label in TSV_COMPARED and have(label)}
    if have("TSV-M") and without_tatr:
        best = max(without_tatr, key=without_tatr.get)
        checks.append(("TSV-M is the best of the data-free methods its paper compares", max(without_tatr.values()) <= avg["TSV-M"],
                       f"TSV-M {avg['TSV-M']:.1f}; the best of the others {best} ({without_tatr[best]:.1f})"))
    if have("TW AdaMerging") and have("LW AdaMerging") and have("Task Arithmetic"):
        checks.append(("AdaMerging (task- and layer-wise) > Task Arithmetic",
                       min(avg["TW AdaMerging"], avg["LW AdaMerging"]) > avg["Task Arithmetic"],
                       f"TW {avg['TW AdaMerging']:.1f}, LW {avg['LW AdaMerging']:.1f}"))
    others = {k: v for k, v in avg.items()
              if k not in ("Pre-trained", "Individual") and not k.startswith(SURGERY) and k not in task_aware}
    if have(SURGERY) and others:  # the paper's Surgery row is above every other method; its TATR plug-in row above it
        best = max(others, key=others.get)
        checks.append(("Surgery is the best merge (the task-aware rows and its own TATR row aside)", avg[SURGERY] >= others[best],
                       f"Surgery {avg[SURGERY]:.1f}; best other {best} ({others[best]:.1f})"))
    checks.append(("every task has ≥ 200 test images", min(test_images.values()) >= 200, f"fewest {min(test_images.values())}"))
    return checks


def print_checks(checks: list[tuple[str, bool, str]]) -> None:
    for what, holds, detail in checks:
        print(f"  {'holds' if holds else 'DOES NOT HOLD'}: {what} ({detail})")


def _orderings_path(zoo_key: str) -> Path:
    from ..zoo.mini import SHIPPED

    return SHIPPED / zoo_key / ORDERINGS_FILE


def write_orderings(zoo_key: str, checks: list[tuple[str, bool, str]], averages: dict[str, float]) -> Path | None:
    """Store the checks of the shipped zoo ``zoo_key`` beside its build (None: the zoo is not a shipped build)."""
    path = _orderings_path(zoo_key)
    if not path.parent.is_dir():
        return None
    record = {"zoo": zoo_key, "script": "bench/mini_zoo_table.py", "date": time.strftime("%Y-%m-%d"),
              "checks": [{"what": w, "holds": bool(h), "detail": d} for w, h, d in checks],
              "averages": {k: round(v, 2) for k, v in averages.items()}}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def stored_orderings(zoo_key: str) -> dict | None:
    """The checks stored for the zoo ``zoo_key`` by :func:`write_orderings`, or None (none stored for it, or a
    file that does not read as one: nothing is shown rather than something wrong)."""
    path = _orderings_path(zoo_key)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = (isinstance(record, dict) and record.get("zoo") == zoo_key and isinstance(record.get("checks"), list)
          and all(isinstance(c, dict) and {"what", "holds", "detail"} <= set(c) for c in record["checks"]))
    return record if ok else None
