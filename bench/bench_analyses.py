"""Cold- and warm-cache times of the analyses on a zoo (issue budgets: τ sweep ≤ 20 s, conflict ≤ 60 s,
one 15×15 landscape ≤ 120 s, anything warm ≤ 1 s).

Cold runs use a scratch cache root that shares only the built zoos (so no result or gradient is
reused); warm runs repeat the same calls.

    .venv/bin/python bench/bench_analyses.py [--zoo mini] [--skip-landscape]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tatr_core.cache as cache  # noqa: E402
from tatr_core.analysis.components import component_accuracy, loss_landscape, merged_component_accuracy  # noqa: E402
from tatr_core.analysis.conflict import conflict_matrix  # noqa: E402
from tatr_core.analysis.layers import layer_sensitivity  # noqa: E402
from tatr_core.analysis.sweeps import sweep  # noqa: E402
from tatr_core import options  # noqa: E402
from tatr_core.evaluate import Evaluator  # noqa: E402
from tatr_core.zoo import load_zoo  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default="mini")
    ap.add_argument("--skip-landscape", action="store_true")
    args = ap.parse_args()
    zoo = load_zoo(args.zoo)  # built (or found) in the real cache
    scratch = Path(tempfile.mkdtemp(prefix="tatr-bench-"))
    os.symlink(cache.root() / "zoos", scratch / "zoos")
    options.set_current(options.current().replace(cache_root=scratch))
    ev = Evaluator(zoo)
    runs = [
        ("τ sweep, TATR gradient (7 points, incl. gradients)", lambda: sweep(zoo, "tatr", "tau", evaluator=ev)),
        ("conflict matrix, Task Arithmetic (K+1 merges)", lambda: conflict_matrix(zoo, "task_arithmetic", evaluator=ev)),
        ("conflict matrix, TATR", lambda: conflict_matrix(zoo, "tatr", evaluator=ev)),
        ("merged components θ^pos/θ^neg/θ^orth (Figure 2a)", lambda: merged_component_accuracy(zoo, evaluator=ev)),
        ("components per task Δ+/Δ-/Δ⊥", lambda: component_accuracy(zoo, evaluator=ev)),
        ("layer sensitivity (Figure 4; gradients from the sweep)", lambda: layer_sensitivity(zoo)),
    ]
    if not args.skip_landscape:
        runs.append(("loss landscape 15×15, total loss, 200 img/task", lambda: loss_landscape(zoo, None, evaluator=ev)))
    print(f"zoo {zoo.name}: {len(zoo.tasks)} tasks, N = {zoo.task_vectors.N:,}")
    print(f"{'analysis':52s}{'cold s':>9s}{'warm s':>9s}")
    for name, fn in runs:
        t0 = time.perf_counter()
        fn()
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        fn()
        warm = time.perf_counter() - t0
        print(f"{name:52s}{cold:9.1f}{warm:9.3f}", flush=True)


if __name__ == "__main__":
    main()
