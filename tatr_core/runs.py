"""Evaluate a method on a zoo: the one function behind ``eval``, the dashboard and the analyses.

``evaluate_method(zoo, "tatr", tau=0.01)`` merges (computing per-task gradients at θ_pre when
the sensitivity needs them), evaluates every task and returns the JSON-able record that
``python -m tatr_core eval --json`` prints.  Records are cached on disk, content-addressed by
zoo, method, parameters, split and sample, so a repeated request costs milliseconds.
"""
from __future__ import annotations

import time
from typing import Sequence

from .cache import cache_dir, digest, read_json, write_json_atomic
from .errors import TatrError
from .evaluate import Evaluator, average_accuracy
from .merge import REGISTRY, merge, resolve_params
from .trust_region import SENSITIVITIES
from .zoo import Progress, Zoo, no_progress

BASELINES = ("pretrained", "individual")
EVAL_METHODS = BASELINES + tuple(REGISTRY)


def method_params(method: str, *, lam=None, density=None, tau=None, sensitivity=None, exemplars: int | None = None,
                  seed: int = 0) -> dict:
    """Every parameter of a run, defaults filled in (what the record and the cache key carry)."""
    if method in BASELINES:
        given = {"lam": lam, "density": density, "tau": tau, "sensitivity": sensitivity}
        extra = [k for k, v in given.items() if v is not None]
        if extra:
            raise TatrError(f"'{method}' takes no merge parameters; leave out --{extra[0]}")
        return {}
    if method not in REGISTRY:
        raise TatrError(f"unknown method '{method}'; choose one of {', '.join(EVAL_METHODS)}")
    params = resolve_params(method, lam=lam, density=density, tau=tau, sensitivity=sensitivity)
    if params["tau"] > 0 and SENSITIVITIES[params["sensitivity"]].needs:
        params["exemplars"] = 128 if exemplars is None else int(exemplars)
        params["seed"] = seed
    return params


def merge_inputs(zoo: Zoo, params: dict, progress: Progress = no_progress) -> dict:
    """The (K, N) gradient tensors a merge with these parameters needs (computed once, cached)."""
    if "exemplars" not in params:
        return {}
    from .gradients import compute_task_gradients

    g = compute_task_gradients(zoo, params["exemplars"], params["seed"], progress=progress)
    return {"grads": g.abs_mean, "signed_grads": g.mean}


def merge_tasks(zoo: Zoo, method: str, params: dict, inputs: dict, tasks: Sequence[int] | None = None):
    """Merge the task vectors of ``tasks`` (indices; all by default) with ``method`` and resolved ``params``.

    The trust region is computed from these tasks only, as θ_MTL({θ_k}) of a subset requires.
    """
    tv = zoo.task_vectors if tasks is None else zoo.task_vectors.subset(tasks)
    aux = inputs if tasks is None else {k: v[list(tasks)] for k, v in inputs.items()}
    return merge(tv, method, lam=params.get("lam"), density=params.get("density"), tau=params["tau"],
                 sensitivity=params.get("sensitivity"), **aux)


def evaluate_method(zoo: Zoo, method: str, *, lam=None, density=None, tau=None, sensitivity=None,
                    exemplars: int | None = None, seed: int = 0, split: str = "test", sample: int | None = None,
                    tasks: Sequence[str] | None = None, evaluator: Evaluator | None = None,
                    progress: Progress = no_progress, use_cache: bool = True) -> dict:
    """``{"method", "params", "tasks": {task: {"accuracy", "loss", "n"}}, "average_accuracy", "split", ...}``."""
    params = method_params(method, lam=lam, density=density, tau=tau, sensitivity=sensitivity,
                           exemplars=exemplars, seed=seed)
    tasks = zoo.check_tasks(tasks)
    key = digest({"zoo": zoo.key, "method": method, "params": params, "split": split, "sample": sample,
                  "seed": seed if sample else None, "tasks": tasks})
    path = cache_dir("results", zoo.key) / f"{method}-{key}.json"
    if use_cache:
        cached = read_json(path)
        if cached is not None:
            return cached
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
        inputs = merge_inputs(zoo, params, progress)
        progress(0.9, f"merging with {method}")
        res = merge_tasks(zoo, method, params, inputs)
        extras = {"excluded": res.excluded, "N": zoo.task_vectors.N}
        progress(0.95, "evaluating the merged model")
        results = evaluator.evaluate(res.theta, tasks, split, sample, seed)
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
    if use_cache:
        write_json_atomic(path, record)
    progress(1.0, "done")
    return record
