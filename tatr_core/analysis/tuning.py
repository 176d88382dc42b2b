"""λ (and TATR's τ) chosen on the validation split, as the papers choose them before reporting test accuracy.

Task Arithmetic, TIES and the methods after them pick the scaling λ per method on held-out
validation data, then report test accuracy at that λ.  :func:`tune` does the same for one row of
a table:

* λ, when the method has one, from :data:`LAM_GRID` (0.1 … 1.0); for a LiNeS row, LiNeS' β in its place
  (from its grid, 0.1 … 1.0, as the LiNeS code searches it);
* τ, when the row merges with the TATR trust region (a training-free method at τ > 0 with a
  non-negative sensitivity), from :data:`TAU_GRID` (0.1% … 5%).  The signed Table 6 variants select
  by sign and do not depend on τ.  The data-using methods (Fisher, RegMean, AdaMerging, Surgery)
  keep their own protocols and their τ: their papers do not tune λ, and every grid point would be
  a fit.

With both, the search is coordinate-wise: λ at the row's τ, then τ at that λ, then λ again at that
τ (26 evaluations instead of the 60 of the full grid; the repeated points come from the cache).
The highest mean validation accuracy wins; a tie goes to the earlier grid value (the smaller λ or
τ).  Every point is one cached :func:`tatr_core.runs.evaluate_method` call on the ``val`` split; the
points of one round run together on the current executor (:mod:`tatr_core.executors`).
"""
from __future__ import annotations

from ..errors import TatrError
from ..evaluate import Evaluator
from ..merge import REGISTRY
from ..merge.lines import LINES_BETA
from ..runs import BASELINES
from ..trust_region import SENSITIVITIES
from ..zoo import Progress, Zoo, no_progress
from .sweeps import MAX_POINTS, run_methods

LAM_GRID = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
TAU_GRID = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05]


def tunable(method: str, params: dict) -> list[str]:
    """The parameters :func:`tune` chooses for a row of ``method`` with ``params``: "lam", "tau", both or none."""
    if method in BASELINES:
        return []
    spec = REGISTRY[method]
    if spec.uses_data:  # Fisher, RegMean, AdaMerging, Surgery: their own protocols (and every point a fit)
        return []
    if params.get("lines_beta") is not None:  # LiNeS scales in place of λ: its β is searched instead
        names = ["lines_beta"]
    else:
        names = ["lam"] if spec.default_lam is not None else []
    tau = params.get("tau", spec.default_tau)
    sensitivity = params.get("sensitivity", "gradient")
    if spec.plugin and not spec.uses_data and tau and tau > 0 and SENSITIVITIES[sensitivity].nonnegative:
        names.append("tau")
    return names


def check_validation_split(zoo: Zoo, split: str = "val") -> None:
    missing = [t for t, task in zoo.tasks.items() if split not in task.splits]
    if missing:
        raise TatrError(f"choosing λ and τ on validation needs a '{split}' split, which {', '.join(missing)} lacks: "
                        "add one to the manifest, or keep the fixed values (--fixed)")


def tune(zoo: Zoo, method: str, *, split: str = "val", sample: int | None = None, evaluator: Evaluator | None = None,
         progress: Progress = no_progress, lam_grid=None, tau_grid=None, **params) -> dict:
    """Choose the row's λ / τ on ``split``: ``{"method", "chosen", "val_accuracy", "trace", "split"}``.

    ``params`` are the row's other parameters (kept fixed); ``chosen`` holds the values found
    (empty when nothing is tunable); ``trace`` every point evaluated, in order.
    """
    names = tunable(method, params)
    out = {"method": method, "chosen": {}, "val_accuracy": None, "trace": [], "split": split}
    if not names:
        return out
    check_validation_split(zoo, split)
    spec = REGISTRY[method]
    grids = {"lam": list(lam_grid or LAM_GRID), "tau": list(tau_grid or TAU_GRID), "lines_beta": list(LINES_BETA.grid)}
    for name, grid in grids.items():
        if len(grid) > MAX_POINTS:
            raise TatrError(f"a {name} grid of {len(grid):,} values is over the limit of {MAX_POINTS} "
                            f"(--{name}-grid): each value is a merge and an evaluation on validation")
    current = {"lam": params.get("lam", spec.default_lam), "tau": params.get("tau", spec.default_tau),
               "lines_beta": params.get("lines_beta")}
    current = {n: current[n] for n in names}
    rounds = [names[0], "tau", names[0]] if len(names) == 2 else names
    total = sum(len(grids[n]) for n in rounds)
    done, best_acc = 0, None
    for name in rounds:
        best_value, best_acc = None, None
        grid = [{**current, name: value} for value in grids[name]]
        records = run_methods(zoo, [{**params, **point, "method": method, "split": split, "sample": sample,
                                     "label": f"{method}: {name} = {point[name]:g} on {split}"} for point in grid],
                              evaluator=evaluator, what=f"{method} {name} points on {split}",
                              progress=lambda f, m, done=done, n=len(grid): progress((done + f * n) / total, m))
        for point, record in zip(grid, records):  # in grid order: a tie goes to the earlier value
            acc = record["average_accuracy"]
            out["trace"].append({**point, "val_accuracy": acc})
            if best_acc is None or acc > best_acc:
                best_value, best_acc = point[name], acc
        done += len(grid)
        progress(done / total, f"{method}: {name} = {best_value:g} is best on {split}: {100 * best_acc:.1f}%")
        current[name] = best_value
    out["chosen"], out["val_accuracy"] = current, best_acc
    return out
