"""Evaluate a method on a zoo: the one function behind ``eval``, the dashboard and the analyses.

``evaluate_method(zoo, "tatr", tau=0.01)`` merges (computing per-task gradients at θ_pre when
the sensitivity needs them), evaluates every task and returns the JSON-able record that
``python -m tatr_core eval --json`` prints.  Records are cached on disk under their spec's key
(:func:`method_spec`: zoo, method, parameters, split, sample), so a repeated request costs milliseconds.

Also the computations of the other kinds of point an analysis is made of (:mod:`tatr_core.points`):
:func:`subset_record` (a method merged on some of the tasks) and :func:`linear_record` (θ_pre plus a
weighted sum of shared vectors).
"""
from __future__ import annotations

import math
import shlex
import time
from typing import Sequence

from .cache import honours_no_cache
from .errors import TatrError
from .evaluate import Evaluator, average_accuracy
from .gradients import compute_task_gradients
from .keys import Spec
from .merge import REGISTRY, check_merged_finite, merge, resolve_params
from .merge.registry import plugin_parameters
from .trust_region import SENSITIVITIES
from .zoo import Progress, Zoo, no_progress

BASELINES = ("pretrained", "individual")
#: what a merge's extras add to its record: what a fit learned, a compression's size, EMR's rescalers
RECORDED_EXTRAS = ("learned", "surgery", "stored_fraction", "rescalers")
EVAL_METHODS = BASELINES + tuple(REGISTRY)


def method_params(method: str, *, lam=None, tau=None, sensitivity=None, exemplars: int | None = None,
                  seed: int = 0, **extra) -> dict:
    """Every parameter of a run, defaults filled in (what the record and the cache key carry).

    ``extra``: the method's own parameters (density, granularity, steps, lr, batch, rank, alpha, p, ...).
    ``seed`` seeds every random draw of the run: exemplars, training batches, a method's own draws.
    """
    if method in BASELINES:
        given = {"lam": lam, "tau": tau, "sensitivity": sensitivity, **extra}
        extra = [k for k, v in given.items() if v is not None]
        if extra:
            raise TatrError(f"'{method}' takes no merge parameters; leave out --{extra[0]}")
        return {}
    if method not in REGISTRY:
        raise TatrError(f"unknown method '{method}'; choose one of {', '.join(EVAL_METHODS)}")
    spec = REGISTRY[method]
    if "exemplars" in spec.declared:  # the method's own exemplars (Fisher, RegMean) also serve the gradients
        extra["exemplars"] = exemplars
    if "seed" in spec.declared:  # a method's own random draws (DARE's drops)
        extra["seed"] = seed
    params = resolve_params(method, lam=lam, tau=tau, sensitivity=sensitivity, **extra)
    if params["tau"] > 0 and SENSITIVITIES[params["sensitivity"]].needs and "exemplars" not in params:
        params["exemplars"] = 128 if exemplars is None else int(exemplars)
    if "exemplars" in params or spec.uses_data:
        params["seed"] = seed
    return params


def merge_inputs_name(params: dict) -> str | None:
    """What :func:`merge_inputs` gives for ``params``, as a name (None when a merge needs no gradients):
    points that share it share one copy (one object in Ray's object store)."""
    if "exemplars" not in params or params["tau"] == 0 or not SENSITIVITIES[params["sensitivity"]].needs:
        return None
    return f"grads-e{params['exemplars']}-s{params['seed']}"


def merge_inputs(zoo: Zoo, params: dict, progress: Progress = no_progress) -> dict:
    """The (K, N) gradient tensors a merge with these parameters needs (computed once, cached)."""
    if merge_inputs_name(params) is None:
        return {}
    g = compute_task_gradients(zoo, params["exemplars"], params["seed"], progress=progress)
    return {"grads": g.abs_mean, "signed_grads": g.mean}


def merge_tasks(zoo: Zoo, method: str, params: dict, inputs: dict, tasks: Sequence[int] | None = None,
                progress: Progress = no_progress):
    """Merge the task vectors of ``tasks`` (indices; all by default) with ``method`` and resolved ``params``.

    The trust region is computed from these tasks only, as θ_MTL({θ_k}) of a subset requires; a
    data-using method learns (or measures) on these tasks' images only.
    """
    spec = REGISTRY[method]
    if spec.uses_data:
        result = spec.fit(zoo, params, None if tasks is None else list(tasks), inputs, progress)
        check_merged_finite(result.theta, method, params)
        return result
    tv = zoo.task_vectors if tasks is None else zoo.task_vectors.subset(tasks)
    aux = inputs if tasks is None else {k: v[list(tasks)] for k, v in inputs.items()}
    plugged = plugin_parameters()
    own = {k: v for k, v in params.items() if (k in spec.declared or k in plugged) and k not in ("tau", "sensitivity")}
    return merge(tv, method, tau=params["tau"], sensitivity=params.get("sensitivity"), **own, **aux)


def evaluate_merge(evaluator: Evaluator, result, tasks: Sequence[str] | None = None, split: str = "test",
                   sample: int | None = None, seed: int = 0, precision: str | None = None):
    """Evaluate a :class:`MergeResult`: with Surgery's per-task modules when it has them, and task-aware (each
    task with its own model, built when its turn comes) for a method that gives one model per task."""
    if result.task_theta is None:
        return evaluator.evaluate(result.theta, tasks, split, sample, seed,
                                  feature_maps=result.extras.get("feature_maps"), precision=precision)
    out = {}
    for task in evaluator.zoo.check_tasks(tasks):
        out.update(evaluator.evaluate(result.theta_for(task), [task], split, sample, seed, precision=precision))
    return out


def method_spec(zoo: Zoo, method: str, params: dict, split: str, sample: int | None, seed: int,
                tasks: Sequence[str]) -> Spec:
    """The spec of one method evaluation (its record's key, whichever executor computed it)."""
    return Spec.of("method", zoo.key, {"method": method, "params": params, "split": split, "sample": sample,
                                       "seed": seed if sample else None, "tasks": list(tasks)})


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def is_task_results(results) -> bool:
    """Whether ``results`` has the shape of ``{task: {"accuracy", "loss", "n"}}`` (a cached point's record)."""
    return isinstance(results, dict) and bool(results) and all(
        isinstance(r, dict) and _number(r.get("accuracy")) and _number(r.get("loss")) and isinstance(r.get("n"), int)
        and (math.isnan(r["accuracy"]) or 0.0 <= r["accuracy"] <= 1.0) for r in results.values())


def is_method_record(record) -> bool:
    """Whether ``record`` has the shape of :func:`evaluate_method`'s record."""
    return (isinstance(record, dict) and is_task_results(record.get("tasks")) and isinstance(record.get("params"), dict)
            and _number(record.get("average_accuracy")) and isinstance(record.get("method"), str))


@honours_no_cache
def evaluate_method(zoo: Zoo, method: str, *, lam=None, density=None, tau=None, sensitivity=None,
                    exemplars: int | None = None, seed: int = 0, split: str = "test", sample: int | None = None,
                    tasks: Sequence[str] | None = None, evaluator: Evaluator | None = None,
                    progress: Progress = no_progress, use_cache: bool = True, **extra) -> dict:
    """``{"method", "params", "tasks": {task: {"accuracy", "loss", "n"}}, "average_accuracy", "split", ...}``.

    ``extra``: the method's own parameters (see ``REGISTRY[method].params``).  Learned methods add
    ``"learned"`` (AdaMerging's coefficients and entropy curve) or ``"surgery"`` (L1 gaps).
    """
    params = method_params(method, lam=lam, density=density, tau=tau, sensitivity=sensitivity,
                           exemplars=exemplars, seed=seed, **extra)
    tasks = zoo.check_tasks(tasks)
    spec = method_spec(zoo, method, params, split, sample, seed, tasks)
    if use_cache and (cached := spec.load(is_method_record)) is not None:
        return cached
    record = method_record(zoo, method, params, split=split, sample=sample, seed=seed, tasks=tasks,
                           evaluator=evaluator, progress=progress)
    if use_cache:
        spec.store(record)
    return record


def method_record(zoo: Zoo, method: str, params: dict, *, split: str, sample: int | None, seed: int,
                  tasks: Sequence[str], evaluator: Evaluator | None = None, inputs: dict | None = None,
                  progress: Progress = no_progress) -> dict:
    """Compute (never look up) the record of :func:`evaluate_method` for resolved ``params``;
    ``inputs``: the merge's gradients when the caller has them already (a Ray worker gets them
    from the object store), else they are computed or read from the gradient cache."""
    start = time.perf_counter()
    evaluator = evaluator or Evaluator(zoo)
    extras: dict = {}
    if method == "pretrained":
        results = evaluator.evaluate(None, tasks, split, sample, seed)
    elif method == "individual":
        results = {}
        for i, t in enumerate(tasks):
            progress(i / len(tasks), f"evaluating the fine-tuned model of {t}")
            results.update(evaluator.evaluate(zoo.finetuned[t], [t], split, sample, seed))
    else:
        if inputs is None:
            inputs = merge_inputs(zoo, params, progress)
        progress(0.1 if REGISTRY[method].uses_data else 0.9, f"merging with {method}")
        res = merge_tasks(zoo, method, params, inputs,
                          progress=lambda f, m: progress(0.1 + 0.8 * f, m))
        extras = {"excluded": res.excluded, "N": zoo.task_vectors.N,
                  **{k: v for k, v in res.extras.items() if k in RECORDED_EXTRAS}}
        if REGISTRY[method].task_aware:
            extras["task_aware"] = True
        progress(0.95, "evaluating the merged model")
        results = evaluate_merge(evaluator, res, tasks, split, sample, seed)
    record = {
        "method": method,
        "params": params,
        "tasks": {t: r.as_dict() for t, r in results.items()},
        "average_accuracy": average_accuracy(results),
        "split": split,
        "sample": sample,
        "zoo": zoo.name,
        "seconds": round(time.perf_counter() - start, 3),
        **extras,
    }
    progress(1.0, "done")
    return record


def subset_record(zoo: Zoo, evaluator: Evaluator, method: str, params: dict, merged: Sequence[int] | None,
                  tasks: Sequence[str], split: str, sample: int | None, seed: int, inputs: dict | None = None,
                  precision: str | None = None, progress: Progress = no_progress) -> dict:
    """``method`` merged on the tasks ``merged`` (indices; None: all) and evaluated on ``tasks``:
    ``{task: {"accuracy", "loss", "n"}}`` (a conflict matrix's leave-one-out merge, Table 4's merge)."""
    if inputs is None:
        inputs = merge_inputs(zoo, params, progress)
    res = merge_tasks(zoo, method, params, inputs, merged, progress=progress)
    results = evaluate_merge(evaluator, res, tasks, split, sample, seed, precision)
    return {t: r.as_dict() for t, r in results.items()}


def linear_record(zoo: Zoo, evaluator: Evaluator, terms: Sequence[tuple[str, float]], vectors: dict,
                  tasks: Sequence[str], split: str, sample: int | None, seed: int,
                  precision: str | None = None, predictions: bool = False) -> dict:
    """θ_pre + Σ weight·vectors[name] over ``terms`` (in order: the same sums on every executor),
    evaluated on ``tasks``: ``{task: {"accuracy", "loss", "n"}}`` (and ``"predictions"``, each image's
    predicted class, when asked for)."""
    theta = zoo.task_vectors.pretrained
    for name, weight in terms:
        theta = theta + weight * vectors[name].to(theta.device)  # no copy when both are on one device
    results = evaluator.evaluate(theta, tasks, split, sample, seed, precision=precision, predictions=predictions)
    return {t: r.as_dict() for t, r in results.items()}


def eval_command(zoo: Zoo, method: str, params: dict) -> str:
    """The shell command that recomputes a record of :func:`evaluate_method` from the command line.

    The zoo is named as the CLI finds it: its manifest's absolute path (a manifest zoo's display
    name is no zoo the CLI knows), or the built-in preset; every argument is shell-quoted.
    """
    spec = zoo.info.get("manifest") or zoo.name
    args = ["python", "-m", "tatr_core", "eval", "--zoo", str(spec), "--method", method]
    for key, value in params.items():
        if value is None or value is False:
            continue
        flag = f"--{key.replace('_', '-')}"
        if value is True:
            args.append(flag)
        elif isinstance(value, (list, tuple)):
            args += [flag, *map(str, value)]
        else:
            args += [flag, str(value)]
    return shlex.join(args)
