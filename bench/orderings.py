"""The orderings the real CLIP zoos show (issue 12), checked on a zoo's average accuracies.

Used by ``mini_zoo_table.py`` (the README's table, every row) and ``recipe_probe.py`` (a recipe tried
with a few rows): each check needs only its own rows, and one whose rows were not computed is left out.
Rows are named by the labels of Table 1 (``tatr_core.analysis.tables.method_rows``).
"""
from __future__ import annotations

SURGERY = "Representation Surgery"
#: the one-model data-free merges the TSV paper puts below TSV-M (later methods, plug-in rows and the
#: task-aware rows, which keep a model per task, are no part of that claim)
TSV_COMPARED = {"Weight Averaging", "Task Arithmetic", "Ties-Merging", "DARE", "Consensus TA", "MagMax", "PCB-Merging"}


def ordering_checks(avg: dict[str, float], test_images: dict[str, int], data_free: set[str]) -> list[tuple[str, bool, str]]:
    """``(what, holds, detail)`` for each ordering whose rows ``avg`` holds (average test accuracy in %
    by row label).  ``data_free``: the labels of the data-free merges computed (TSV-M must be the best
    of those without TATR); ``test_images``: the test split's size per task."""
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
    others = {k: v for k, v in avg.items() if k not in ("Pre-trained", "Individual") and not k.startswith(SURGERY)}
    if have(SURGERY) and others:  # the paper's Surgery row is above every other method; its TATR plug-in row above it
        best = max(others, key=others.get)
        checks.append(("Surgery is the best of all merges (its TATR plug-in row aside)", avg[SURGERY] >= others[best],
                       f"Surgery {avg[SURGERY]:.1f}; best other {best} ({others[best]:.1f})"))
    checks.append(("every task has ≥ 200 test images", min(test_images.values()) >= 200, f"fewest {min(test_images.values())}"))
    return checks


def print_checks(checks: list[tuple[str, bool, str]]) -> None:
    for what, holds, detail in checks:
        print(f"  {'holds' if holds else 'DOES NOT HOLD'}: {what} ({detail})")
