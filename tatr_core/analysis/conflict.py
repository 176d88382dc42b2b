"""Knowledge conflict (Definition 1 / Eq. 3).

C_{j|i} = L_j(θ_MTL({θ_k}_{k=1..K})) − L_j(θ_MTL({θ_k}_{k≠i})): how much adding task i to the
merge raises task j's loss (positive = conflict).  The accuracy form is the accuracy task j
loses by adding task i, acc_j(without i) − acc_j(all).  C = Σ_{i≠j} C_{j|i}.  K + 1 merges:
all tasks, then each leave-one-out set, with the method re-run on that set (the trust region,
TIES' elected signs and TSV's rank budget all depend on which tasks take part).  Evaluated in
float32 whatever the evaluator's precision (bf16 blurs the small loss differences C is made of,
:mod:`tatr_core.evaluate`).  Each merge is one point (:mod:`tatr_core.points`), cached on its own and computed by the current executor.
"""
from __future__ import annotations

from ..errors import TatrError
from ..executors import run_points
from ..keys import Spec
from ..points import Point, Shared, subset_point
from ..runs import BASELINES, merge_inputs, merge_inputs_name, method_params
from ..zoo import Progress, Zoo, no_progress
from .registry import Context, has_keys, register, run


def subset_points(zoo: Zoo, method: str, params: dict, subsets: list, labels: list[str], split: str,
                  sample: int | None, seed: int, shared: Shared, precision: str | None = None) -> list[Point]:
    """One ``subset`` point per set of merged task indices (None: all), each evaluated on every task
    (in float32 with ``precision="fp32"``)."""
    inputs = merge_inputs_name(params)
    if inputs is not None:
        shared.add(inputs, lambda: merge_inputs(zoo, params))
    return [subset_point(zoo, method, params, merged, zoo.task_names, split, sample, seed, label, inputs, precision)
            for merged, label in zip(subsets, labels)]


def conflict_spec(zoo: Zoo, method: str = "task_arithmetic", *, lam=None, density=None, tau=None, sensitivity=None,
                  exemplars: int | None = None, seed: int = 0, split: str = "test", sample: int | None = None,
                  **extra) -> Spec:
    """The spec of :func:`conflict_matrix` (its parameters checked and completed)."""
    if method in BASELINES:
        raise TatrError(f"knowledge conflict needs a merge method, not '{method}'")
    if len(zoo.task_names) < 2:
        raise TatrError("knowledge conflict needs at least two tasks")
    params = method_params(method, lam=lam, density=density, tau=tau, sensitivity=sensitivity,
                           exemplars=exemplars, seed=seed, **extra)
    return Spec.of("conflict", zoo.key, {"method": method, "params": params, "split": split, "sample": sample,
                                         "seed": seed})


@register("conflict", "knowledge conflict", has_keys("tasks", "loss", "accuracy", "total_loss", "total_accuracy"),
          lambda args: f"knowledge conflict of {args['method']}: K + 1 merges")
def _conflict(zoo: Zoo, args: dict, ctx: Context) -> dict:
    names, method, params, split, sample = zoo.task_names, args["method"], args["params"], args["split"], args["sample"]
    K = len(names)
    shared = Shared()
    subsets = [None] + [[k for k in range(K) if k != i] for i in range(K)]
    labels = [f"{method} on all {K} tasks"] + [f"{method} without {n}" for n in names]
    # float32 even where the evaluator uses bf16: C is a difference of close losses
    points = subset_points(zoo, method, params, subsets, labels, split, sample, args["seed"], shared, precision="fp32")
    results: list = [None] * len(points)

    def assemble() -> dict:
        full, without = results[0], dict(zip(names, results[1:]))

        def entry(j: str, i: str, field: str, sign: int):
            if i == j or full is None or without[i] is None:
                return None
            return sign * (full[j][field] - without[i][j][field])

        loss = [[entry(tj, ti, "loss", 1) for ti in names] for tj in names]
        acc = [[entry(tj, ti, "accuracy", -1) for ti in names] for tj in names]
        return {"tasks": names, "method": method, "params": params, "split": split, "sample": sample,
                "loss": loss, "accuracy": acc, "full": full, "without": without,
                "total_loss": sum(v for row in loss for v in row if v is not None),
                "total_accuracy": sum(v for row in acc for v in row if v is not None)}

    def arrived(n: int, result: dict) -> None:
        results[n] = result
        if ctx.on_update is not None:
            ctx.on_update(assemble())

    outcome = run_points(zoo, points, shared=shared, evaluator=ctx.evaluator, progress=ctx.progress, on_result=arrived,
                     what="conflict merges")
    record = assemble()
    outcome.mark_failures(record)
    ctx.progress(1.0, "conflict matrix done")
    return record


def conflict_matrix(zoo: Zoo, method: str = "task_arithmetic", *, evaluator=None, progress: Progress = no_progress,
                    on_update=None, use_cache: bool = True, **kw) -> dict:
    """``{"tasks", "method", "params", "loss": K×K, "accuracy": K×K, "full", "without", "total_loss", "total_accuracy"}``.

    ``loss[j][i]`` is C_{j|i} (row j: the task that suffers; column i: the task added); the
    diagonal is ``None``.  ``full[task]`` and ``without[i][task]`` hold the two evaluations
    every entry is the difference of.  ``failed`` lists the merges that failed on every try (Ray);
    their row and column entries are ``None``, as are those of merges still to come in the partial
    records ``on_update`` receives as merges arrive.  ``kw``: :func:`conflict_spec`'s parameters.
    """
    return run(zoo, conflict_spec(zoo, method, **kw), evaluator=evaluator, progress=progress, on_update=on_update,
               use_cache=use_cache)
