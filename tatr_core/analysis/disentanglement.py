"""Weight disentanglement (Ortiz-Jiménez et al., 2023, "Task Arithmetic in the Tangent Space", Eq. 5).

Task arithmetic works when adding task vector τ₁ changes the model only on task 1's inputs and τ₂ only
on task 2's.  The weight-disentanglement error of two tasks measures how far a zoo is from that:

    ξ(α₁, α₂) = Σ_{t ∈ {1, 2}} E_{x ~ μ_t} [ dist( f(x; θ_pre + α_t τ_t),  f(x; θ_pre + α₁ τ₁ + α₂ τ₂) ) ]

with dist(y, y') = 1[y ≠ y'] on the predicted classes (the paper's prediction error): on each task's
images, the share whose prediction changes when the *other* task's vector is added.  ξ is 0 for
perfectly disentangled tasks and at most 2.  The paper draws it over α ∈ [−3, 3]² (step 0.5 gives its 13×13;
the default step 1, 7×7, takes a quarter of the time); Task Arithmetic
itself lives in [0, 1]², whose mean ξ (``mean_unit``) is this module's one-number summary.

Every model is one point (:mod:`tatr_core.points`, kind ``linear`` with ``predictions``): for each α on
the axis, θ_pre + α τ_t on task t alone, and for each (α₁, α₂) the joint model on both tasks, so a
finer grid reuses the points it shares and an interrupted grid resumes.  Predictions are compared
image by image on the same fixed seeded sample of each task.
"""
from __future__ import annotations

from typing import Callable

from ..errors import TatrError
from ..executors import run_points
from ..keys import Spec
from ..points import Shared, linear_point
from ..zoo import Progress, Zoo, no_progress
from .components import grid_axis
from .registry import Context, has_keys, register, run


def disentanglement_spec(zoo: Zoo, tasks: list[str] | tuple[str, ...] | None = None, *, start: float = -3.0,
                         stop: float = 3.0, step: float = 1.0, split: str = "test", sample: int | None = 200,
                         seed: int = 0) -> Spec:
    """The spec of :func:`disentanglement`: two tasks (default the zoo's first two) and the α grid."""
    names = zoo.task_names
    if len(names) < 2:
        raise TatrError("weight disentanglement needs a zoo of at least two tasks")
    pair = list(tasks) if tasks else names[:2]
    if len(pair) != 2 or pair[0] == pair[1]:
        raise TatrError(f"weight disentanglement compares two different tasks, got {', '.join(pair) or 'none'}: "
                        "name two, e.g. --tasks " + " ".join(names[:2]))
    zoo.check_tasks(pair)
    axis = grid_axis(start, stop, step, what="disentanglement")
    return Spec.of("disentanglement", zoo.key, {"tasks": pair, "axis": axis, "split": split, "sample": sample,
                                                "seed": seed})


def disentanglement(zoo: Zoo, tasks=None, *, evaluator=None, progress: Progress = no_progress,
                    on_update: Callable[[dict], None] | None = None, use_cache: bool = True, **kw) -> dict:
    """ξ(α₁, α₂) of two tasks over a grid: ``xi[i2][i1]`` at (α₁ = axis[i1], α₂ = axis[i2]), ``None`` where a
    point is still to come (partial records) or failed.  ``error[task]`` is that task's term of ξ,
    ``accuracy[task]`` the joint model's accuracy on it, ``single[task]`` the accuracy of θ_pre + α τ_task
    along the axis; ``mean`` and ``mean_unit`` average ξ over the grid and over its points in [0, 1]².
    ``kw``: :func:`disentanglement_spec`'s parameters."""
    return run(zoo, disentanglement_spec(zoo, tasks, **kw), evaluator=evaluator, progress=progress,
               on_update=on_update, use_cache=use_cache)


def disagreement(a: list[int], b: list[int]) -> float:
    """The share of positions where two prediction lists differ (dist = 1[y ≠ y'], averaged)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"predictions of different images compared ({len(a)} against {len(b)})")
    return sum(x != y for x, y in zip(a, b)) / len(a)


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


@register("disentanglement", "weight disentanglement", has_keys("tasks", "axis", "xi", "error", "mean", "mean_unit"),
          lambda args: f"weight disentanglement of {' and '.join(args['tasks'])}: "
                       f"{len(args['axis'])}×{len(args['axis'])} merged models")
def _disentanglement(zoo: Zoo, args: dict, ctx: Context) -> dict:
    pair, axis, split, sample, seed = (args[k] for k in ("tasks", "axis", "split", "sample", "seed"))
    index = {t: zoo.task_names.index(t) for t in pair}
    vectors = {t: f"task-vector/{t}" for t in pair}
    shared = Shared({vectors[t]: (lambda t=t: zoo.task_vectors.deltas[index[t]]) for t in pair})
    source = {"task_vectors": pair}
    n = len(axis)
    singles = [(t, i) for t in pair for i in range(n)]
    cells = [(i2, i1) for i2 in range(n) for i1 in range(n)]
    points = [linear_point(zoo, f"θ_pre + {axis[i]:g}·τ({t})", [(vectors[t], axis[i])], [t], split, sample, seed,
                           source, precision="fp32", predictions=True) for t, i in singles]
    points += [linear_point(zoo, f"θ_pre + {axis[i1]:g}·τ({pair[0]}) + {axis[i2]:g}·τ({pair[1]})",
                            [(vectors[pair[0]], axis[i1]), (vectors[pair[1]], axis[i2])], pair, split, sample, seed,
                            source, precision="fp32", predictions=True) for i2, i1 in cells]
    single: dict[tuple[str, int], dict] = {}
    joint: dict[tuple[int, int], dict] = {}
    compared: dict[tuple[str, int, int], float] = {}  #: each term of ξ, compared once (a partial record per arrival)

    def record_now() -> dict:
        error = {t: [[None] * n for _ in axis] for t in pair}
        accuracy = {t: [[None] * n for _ in axis] for t in pair}
        for (i2, i1), result in joint.items():
            for t, i in zip(pair, (i1, i2)):
                accuracy[t][i2][i1] = result[t]["accuracy"]
                alone = single.get((t, i))
                if alone is not None:
                    if (t, i2, i1) not in compared:
                        compared[(t, i2, i1)] = disagreement(alone["predictions"], result[t]["predictions"])
                    error[t][i2][i1] = compared[(t, i2, i1)]
        xi = [[None if error[pair[0]][i2][i1] is None or error[pair[1]][i2][i1] is None
               else error[pair[0]][i2][i1] + error[pair[1]][i2][i1] for i1 in range(n)] for i2 in range(n)]
        unit = [i for i, a in enumerate(axis) if 0 <= a <= 1]
        return {"tasks": pair, "axis": axis, "split": split, "sample": sample, "seed": seed, "xi": xi,
                "error": error, "accuracy": accuracy,
                "single": {t: [single[(t, i)]["accuracy"] if (t, i) in single else None for i in range(n)]
                           for t in pair},
                "images": {t: next((r[t]["n"] for r in joint.values()), None) for t in pair},
                "mean": _mean([v for row in xi for v in row]),
                "mean_unit": _mean([xi[i2][i1] for i2 in unit for i1 in unit])}

    def arrived(k: int, result: dict) -> None:
        if k < len(singles):
            t, i = singles[k]
            single[(t, i)] = result[t]
        else:
            joint[cells[k - len(singles)]] = result
        if ctx.on_update is not None:
            ctx.on_update(record_now())

    outcome = run_points(zoo, points, shared=shared, evaluator=ctx.evaluator, progress=ctx.progress, on_result=arrived,
                         what="disentanglement points")
    record = record_now()
    outcome.mark_failures(record)
    ctx.progress(1.0, "weight disentanglement done")
    return record
