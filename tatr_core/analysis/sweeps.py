"""Accuracy against τ, λ or the exemplar count (Figure 3, Table 5), point by point.

Each point is one :func:`tatr_core.runs.evaluate_method` call, cached on disk, so a sweep that
was interrupted resumes where it stopped and a repeated sweep costs milliseconds.
``on_point(value, record)`` is called as each point finishes with that point's evaluation, and
``on_update(sweep_so_far)`` with the partial sweep record, for live curves.
"""
from __future__ import annotations

from typing import Callable, Sequence

from ..errors import TatrError
from ..evaluate import Evaluator
from ..runs import evaluate_method
from ..zoo import Progress, Zoo, no_progress

DEFAULT_GRIDS = {
    "tau": [0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05],
    "lam": [0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0],
    "exemplars": [1, 2, 4, 8, 16, 32, 64, 128],
}


def sweep(zoo: Zoo, method: str, parameter: str, values: Sequence[float] | None = None, *,
          on_point: Callable[[float, dict], None] | None = None,
          on_update: Callable[[dict], None] | None = None, evaluator: Evaluator | None = None,
          progress: Progress = no_progress, **fixed) -> dict:
    """``{"method", "parameter", "values", "fixed", "points": [{"value", "average_accuracy", "tasks"}]}``."""
    if parameter not in DEFAULT_GRIDS:
        raise TatrError(f"can sweep {', '.join(DEFAULT_GRIDS)}, not '{parameter}'")
    if parameter in fixed:
        raise TatrError(f"'{parameter}' is swept; do not also fix it")
    values = list(DEFAULT_GRIDS[parameter] if values is None else values)
    if not values:
        raise TatrError("a sweep needs at least one value")
    evaluator = evaluator or Evaluator(zoo)
    points = []
    for n, value in enumerate(values):
        progress(n / len(values), f"{method}: {parameter} = {value}")
        kw = dict(fixed, **{parameter: int(value) if parameter == "exemplars" else value})
        record = evaluate_method(zoo, method, evaluator=evaluator, **kw,
                                 progress=lambda f, m, n=n: progress((n + f) / len(values), f"{parameter} = {value}: {m}"))
        point = {"value": value, "average_accuracy": record["average_accuracy"], "tasks": record["tasks"],
                 "params": record["params"], "excluded": record.get("excluded", 0)}
        points.append(point)
        if on_point is not None:
            on_point(value, record)
        if on_update is not None:  # the sweep so far, in the final record's shape (for live curves)
            on_update({"method": method, "parameter": parameter, "values": values, "fixed": fixed,
                       "points": list(points)})
    progress(1.0, "sweep done")
    return {"method": method, "parameter": parameter, "values": values, "fixed": fixed, "points": points}
