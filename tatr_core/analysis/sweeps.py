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
from ..executors import run_points
from ..keys import Spec
from ..merge import PLUGINS, REGISTRY, Param
from ..points import Point, Shared, method_point as point_of
from ..runs import merge_inputs, merge_inputs_name, method_params, method_spec
from ..zoo import Progress, Zoo, no_progress
from .registry import Context, has_keys, register

#: the most values one sweep (or one round of the validation search) evaluates
MAX_POINTS = 100
DEFAULT_GRIDS = {
    "tau": [0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05],
    "lam": [0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0],
    "exemplars": [1, 2, 4, 8, 16, 32, 64, 128],
}


def sweepable(method: str) -> dict[str, list]:
    """{parameter: default grid} a sweep of ``method`` can take: τ, λ (when it has one), the exemplar
    count, and every numeric parameter it declares with a grid (tatr_core.merge.registry.Param)."""
    spec = REGISTRY[method]
    out = {"tau": DEFAULT_GRIDS["tau"], "exemplars": DEFAULT_GRIDS["exemplars"]}
    if spec.default_lam is not None:
        out["lam"] = DEFAULT_GRIDS["lam"]
    for p in spec.parameters:
        if p.kind is not str and p.grid and p.name not in out and p.name != "seed":
            out[p.name] = list(p.grid)
    for p in plugin_sweeps(method):
        out[p.name] = list(p.grid)
    return out


def plugin_sweeps(method: str) -> list[Param]:
    """The numeric parameters with a grid of the plug-ins after TATR (LiNeS' β) that apply to ``method``."""
    spec, out = REGISTRY[method], []
    for plugin in PLUGINS.values():
        for p in plugin.parameters:
            if plugin.name == "tatr" or p.kind is str or not p.grid:
                continue
            try:
                plugin.resolve(spec, {p.name: p.grid[0]})
            except TatrError:  # not for this method (LiNeS on a data-using or task-aware one)
                continue
            out.append(p)
    return out


def _param(method: str, name: str) -> Param | None:
    """The declaration of ``method``'s parameter ``name``, its own or a plug-in's."""
    return REGISTRY[method].declared.get(name) or next((p for p in plugin_sweeps(method) if p.name == name), None)


def extended_grid(method: str, parameter: str, zoo: Zoo | None = None) -> list:
    """The default grid of ``parameter`` for ``method`` with 2×, 4× and 8× its last value added, as far
    as the parameter's range allows (τ < 1; a declared parameter's bounds; for the exemplar count, the
    smallest training split of ``zoo``): for a best point at the edge."""
    grid = list(sweepable(method)[parameter])
    last = grid[-1]
    param = _param(method, parameter)
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
    out: dict[str, str] = {}
    for spec in REGISTRY.values():
        if not spec.uses_data:
            for name in sweepable(spec.name):
                if name not in DEFAULT_GRIDS:
                    param = _param(spec.name, name)
                    out.setdefault(name, param.label or name)
    return out


def method_point(zoo: Zoo, method: str, *, split: str = "test", sample: int | None = None, seed: int = 0,
                 tasks=None, label: str | None = None, shared: Shared | None = None, **kw) -> Point:
    """One :func:`tatr_core.runs.evaluate_method` call as a point (cached where that function caches it);
    the gradients it needs are added to ``shared``."""
    params = method_params(method, seed=seed, **kw)
    tasks = zoo.check_tasks(tasks)
    inputs = merge_inputs_name(params)
    if inputs is not None and shared is not None:
        shared.add(inputs, lambda: merge_inputs(zoo, params))
    return point_of(method_spec(zoo, method, params, split, sample, seed, tasks), label or method,
                    inputs if shared is not None else None)


def run_methods(zoo: Zoo, calls: Sequence[dict], *, evaluator: Evaluator | None = None, progress: Progress = no_progress,
                on_result: Callable[[int, dict], None] | None = None, what: str = "evaluations") -> list[dict]:
    """``evaluate_method(zoo, **call)`` for every call (each a dict with ``method`` and its keywords, and an
    optional ``label``), as points: cached ones at once, the rest by the current executor.  A failed
    point is an error here: a table or a sweep with a hole would be read as complete."""
    shared = Shared()
    points = [method_point(zoo, shared=shared, **c) for c in calls]
    run = run_points(zoo, points, shared=shared, evaluator=evaluator, progress=progress, on_result=on_result, what=what)
    run.require_all(what)
    return run.results


def sweep(zoo: Zoo, method: str, parameter: str, values: Sequence[float] | None = None, *,
          on_point: Callable[[float, dict], None] | None = None,
          on_update: Callable[[dict], None] | None = None, evaluator: Evaluator | None = None,
          progress: Progress = no_progress, **fixed) -> dict:
    """``{"method", "parameter", "values", "fixed", "points": [{"value", "average_accuracy", "tasks"}]}``.

    The points are computed by the current executor, in any order; ``points`` is in ``values``' order,
    also in the partial records ``on_update`` receives.
    """
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
    if len(values) > MAX_POINTS:
        raise TatrError(f"a sweep of {len(values):,} values is over the limit of {MAX_POINTS} (--values): each value is a "
                        "merge and an evaluation of every task; sweep fewer")
    calls = [dict(fixed, method=method, label=f"{method}: {parameter} = {value}",
                  **{parameter: int(value) if parameter in ("exemplars", "min_tasks") else value}) for value in values]
    done: dict[int, dict] = {}

    def point(n: int, record: dict) -> dict:
        return {"value": values[n], "average_accuracy": record["average_accuracy"], "tasks": record["tasks"],
                "params": record["params"], "excluded": record.get("excluded", 0)}

    def arrived(n: int, record: dict) -> None:
        done[n] = record
        if on_point is not None:
            on_point(values[n], record)
        if on_update is not None:  # the sweep so far, in the final record's shape
            on_update({"method": method, "parameter": parameter, "values": values, "fixed": fixed,
                       "points": [point(k, done[k]) for k in sorted(done)]})

    records = run_methods(zoo, calls, evaluator=evaluator, progress=progress, on_result=arrived,
                          what=f"{method} {parameter} sweep points")
    progress(1.0, "sweep done")
    return {"method": method, "parameter": parameter, "values": values, "fixed": fixed,
            "points": [point(n, r) for n, r in enumerate(records)]}


def sweeps_spec(zoo: Zoo, parameter: str, methods: Sequence[str], grids: dict[str, list], splits: Sequence[str] = ("test",),
                **fixed) -> Spec:
    """Several curves as one request (the Sweeps page's): each method's ``grids[method]`` on each split."""
    for method in methods:
        if method not in REGISTRY:
            raise TatrError(f"unknown method '{method}'; choose one of {', '.join(REGISTRY)}")
    return Spec.of("sweeps", zoo.key, {"parameter": parameter, "methods": list(methods), "splits": list(splits),
                                       "grids": {m: list(grids[m]) for m in methods}, "fixed": fixed})


@register("sweeps", "sweep curves", has_keys("curves"),
          lambda args: f"{len(args['methods']) * len(args['splits'])} curves, "
                       f"{sum(map(len, args['grids'].values())) * len(args['splits'])} points")
def _sweeps(zoo: Zoo, args: dict, ctx: Context) -> dict:
    """Every curve, one after another; the curves so far are published as each point finishes."""
    done: list[dict] = []
    runs = [(m, split) for m in args["methods"] for split in args["splits"]]
    for n, (method, split) in enumerate(runs):
        record = sweep(zoo, method, args["parameter"], args["grids"][method], evaluator=ctx.evaluator, split=split,
                       progress=lambda f, m, n=n: ctx.progress((n + f) / len(runs), m),
                       on_update=(lambda partial: ctx.on_update({"curves": done + [partial]})) if ctx.on_update else None,
                       **args["fixed"])
        done.append(record)
    return {"curves": done}
