"""Accuracy against τ, λ, the exemplar count (Figure 3, Table 5) or any numeric parameter a method
declares (density, drop rate, ...; its declared grid by default), point by point.

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


def sweepable(method: str) -> dict[str, list]:
    """{parameter: default grid} a sweep of ``method`` can take: τ, λ (when it has one), the exemplar
    count, and every numeric parameter it declares with a grid (tatr_core.merge.registry.Param)."""
    from ..merge import REGISTRY

    spec = REGISTRY[method]
    out = {"tau": DEFAULT_GRIDS["tau"], "exemplars": DEFAULT_GRIDS["exemplars"]}
    if spec.default_lam is not None:
        out["lam"] = DEFAULT_GRIDS["lam"]
    for p in spec.parameters:
        if p.kind is not str and p.grid and p.name not in out and p.name != "seed":
            out[p.name] = list(p.grid)
    return out


def extended_grid(method: str, parameter: str, zoo: Zoo | None = None) -> list:
    """The default grid of ``parameter`` for ``method`` with 2×, 4× and 8× its last value added, as far
    as the parameter's range allows (τ < 1; a declared parameter's bounds; for the exemplar count, the
    smallest training split of ``zoo``): for a best point at the edge."""
    from ..merge import REGISTRY

    grid = list(sweepable(method)[parameter])
    last = grid[-1]
    param = REGISTRY[method].declared.get(parameter)
    for factor in (2, 4, 8):
        value = last * factor
        value = int(value) if isinstance(last, int) else round(value, 10)
        if parameter == "tau" and value >= 1:
            break
        if parameter == "exemplars" and zoo is not None and value > min(len(t.split("train")[1])
                                                                         for t in zoo.tasks.values()):
            break
        if param is not None and param.kind is not str:
            try:
                param.check(method, value)
            except TatrError:
                break
        grid.append(value)
    return grid


def declared_sweeps() -> dict[str, str]:
    """{parameter: label} of the numeric parameters the training-free methods declare with a grid."""
    from ..merge import REGISTRY

    out: dict[str, str] = {}
    for spec in REGISTRY.values():
        if not spec.uses_data:
            for name in sweepable(spec.name):
                if name not in DEFAULT_GRIDS:
                    param = spec.declared[name]
                    out.setdefault(name, param.label or name)
    return out


def sweep(zoo: Zoo, method: str, parameter: str, values: Sequence[float] | None = None, *,
          on_point: Callable[[float, dict], None] | None = None,
          on_update: Callable[[dict], None] | None = None, evaluator: Evaluator | None = None,
          progress: Progress = no_progress, **fixed) -> dict:
    """``{"method", "parameter", "values", "fixed", "points": [{"value", "average_accuracy", "tasks"}]}``."""
    from ..merge import REGISTRY

    if method not in REGISTRY:
        raise TatrError(f"unknown method '{method}'; choose one of {', '.join(REGISTRY)}")
    grids = sweepable(method)
    if parameter not in grids:
        raise TatrError(f"'{method}' can sweep {', '.join(grids)}, not '{parameter}'")
    if parameter in fixed:
        raise TatrError(f"'{parameter}' is swept; do not also fix it")
    values = list(grids[parameter] if values is None else values)
    if not values:
        raise TatrError("a sweep needs at least one value")
    evaluator = evaluator or Evaluator(zoo)
    points = []
    for n, value in enumerate(values):
        progress(n / len(values), f"{method}: {parameter} = {value}")
        kw = dict(fixed, **{parameter: int(value) if parameter in ("exemplars", "min_tasks") else value})
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
