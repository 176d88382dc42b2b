"""The registry of analyses: every analysis is a kind of :class:`tatr_core.keys.Spec` and one function.

An analysis module declares a *spec builder* (checks its parameters, fills in defaults, returns a
:class:`~tatr_core.keys.Spec`) and registers its *compute* function under the spec's kind with
:func:`register`.  :func:`run` is the one way to get an analysis's record: it serves the verified
cached record of the spec, or computes it (its points on the current executor) and caches it.
Pages run a spec as a background job keyed by ``spec.key()``; the CLI runs it in the foreground.

    spec = conflict_spec(zoo, "task_arithmetic")
    record = run(zoo, spec, evaluator=evaluator, progress=bar)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..cache import recompute
from ..evaluate import Evaluator
from ..keys import Spec
from ..zoo import Progress, Zoo, no_progress


@dataclass
class Context:
    """How an analysis runs: the evaluator to share, where progress and partial records go, the cache."""
    evaluator: Evaluator | None = None
    progress: Progress = no_progress
    on_update: Callable[[dict], None] | None = None  #: partial records as points arrive (live figures)
    use_cache: bool = True


@dataclass(frozen=True)
class Analysis:
    kind: str  #: the kind of its specs (tatr_core.keys.KINDS)
    title: str
    compute: Callable[[Zoo, dict, Context], dict]  #: (zoo, the spec's arguments, context) -> record
    check: Callable[[Any], bool]  #: the shape a cached record must have to be served
    label: Callable[[dict], str]  #: what a progress bar calls a run of it, from the spec's arguments


ANALYSES: dict[str, Analysis] = {}


def register(kind: str, title: str, check: Callable[[Any], bool], label: Callable[[dict], str] | None = None):
    """Decorator: ``compute(zoo, args, context) -> record`` is the analysis of specs of ``kind``."""
    def deco(fn):
        if kind in ANALYSES:
            raise ValueError(f"analysis '{kind}' registered twice")
        ANALYSES[kind] = Analysis(kind, title, fn, check, label or (lambda args: title))
        return fn
    return deco


def has_keys(*keys: str) -> Callable[[Any], bool]:
    """A record check: a dict with these keys."""
    return lambda record: isinstance(record, dict) and all(k in record for k in keys)


def run(zoo: Zoo, spec: Spec, *, evaluator: Evaluator | None = None, progress: Progress = no_progress,
        on_update: Callable[[dict], None] | None = None, use_cache: bool = True) -> dict:
    """The record of ``spec`` (an analysis of :data:`ANALYSES` on ``zoo``): cached, or computed and cached.

    ``use_cache=False`` recomputes it and everything it depends on (:func:`tatr_core.cache.recompute`).
    A record that names failed points (``"failed"``: Ray points that failed on every try) is returned
    but not cached whole: the next request computes only the missing points.
    """
    if spec.zoo != zoo.key:
        raise ValueError(f"spec for zoo {spec.zoo} run on zoo {zoo.key}")
    analysis = ANALYSES[spec.kind]
    if use_cache and (cached := spec.load(analysis.check)) is not None:
        return cached
    context = Context(evaluator, progress, on_update, use_cache)
    if use_cache:
        record = analysis.compute(zoo, spec.arguments, context)
    else:
        with recompute():
            record = analysis.compute(zoo, spec.arguments, context)
    if use_cache and not record.get("failed"):
        spec.store(record)
    return record


def cost_units(spec: Spec, tasks: int) -> float:
    """How much work ``spec`` is, in task evaluations (one merged model on one task's split), roughly: what
    the dashboard's job queue orders by, scaled by the seconds per unit it has measured for the kind."""
    a, K = spec.arguments, max(int(tasks), 1)
    sample = a.get("sample")
    scale = 1.0 if not sample else min(1.0, sample / 500)  # a 200-image sample is a cheaper evaluation
    if spec.kind == "conflict":
        units = K * (K + 1)
    elif spec.kind == "components":
        units = 5 * K + K  # each part on each task, and the gradients
    elif spec.kind == "merged-components":
        units = 4 * K
    elif spec.kind == "landscape":
        units = len(a["params"]["axis"]) ** 2 * (K if a["params"]["task"] is None else 1) + K
    elif spec.kind == "disentanglement":  # each joint model on both tasks, each single one on its task
        units = 2 * len(a["axis"]) ** 2 + 2 * len(a["axis"])
    elif spec.kind == "sweeps":
        units = sum(len(v) for v in a["grids"].values()) * len(a["splits"]) * K
    elif spec.kind == "table":
        units = {"methods": 45 if a.get("test_time") else 35, "sensitivity-variants": 6}.get(a["table"], 10) * K
        units *= 8 if a.get("tune") else 1
    elif spec.kind in ("layers", "tsv", "geometry"):
        units = K
    else:  # one evaluation
        units = K
    return float(units) * scale


def label(spec: Spec) -> str:
    """What a progress bar or a job list calls a run of ``spec``."""
    return ANALYSES[spec.kind].label(spec.arguments)
