"""Analyses as sets of points: each point is one merge (or one point of a plane) and one evaluation,
cached on its own and computed by an executor.

Sweeps, conflict matrices, landscapes, component accuracies, method tables and the validation
search are each a list of independent :class:`Point`\\ s.  :func:`run_points`:

1. looks every point up in the results cache (a point asked for twice is computed once);
2. hands the missing ones to the executor (:mod:`tatr_core.executors`: in this process, or Ray actors);
3. writes each result to the cache as it comes back, in this process (the *driver*), so workers need
   no shared filesystem;
4. reports it at once (``on_result``), so pages can draw as points arrive.

A point's cache entry is the same whichever executor computed it.  An interrupted landscape
resumes where it stopped, and a Ray run and a local run share their results.

Kinds of point (:data:`KINDS`), each a function ``(zoo, evaluator, args, shared, progress) -> JSON``:

* ``method``: one :func:`tatr_core.runs.method_record` (a row of a table, a point of a sweep or of
  the validation search), cached exactly where :func:`tatr_core.runs.evaluate_method` caches it;
* ``subset``: a method re-run on a subset of the tasks and evaluated on given tasks (the conflict
  matrix's leave-one-out merges, Table 4's merge without the held-out tasks);
* ``linear``: θ_pre + Σ_c w_c·v_c for shared flat vectors v_c (a landscape's grid point, the merged
  model of one component), evaluated on given tasks.

Large inputs that many points use (the per-task gradients, the components that span a plane) are
:class:`Shared`.  The driver computes each once, and only when some point misses the cache; a Ray
run sends it to the workers once, through the object store.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .cache import lookup_json, write_json_atomic
from .errors import TatrError
from .zoo import Progress, Zoo, no_progress


@dataclass(frozen=True)
class Point:
    kind: str                 #: a key of :data:`KINDS`
    args: dict                #: JSON-able arguments of the kind's function
    label: str                #: names the point in progress messages and failure reports
    path: Path                #: its cache entry
    shared: tuple[str, ...] = ()  #: names of the :class:`Shared` inputs it uses


class Shared:
    """Named large inputs, each made by its function the first time a point needs it, then kept."""

    def __init__(self, makers: dict[str, Callable[[], Any]] | None = None):
        self._makers = dict(makers or {})
        self._values: dict[str, Any] = {}

    def add(self, name: str, maker: Callable[[], Any]) -> str:
        self._makers.setdefault(name, maker)
        return name

    def get(self, name: str) -> Any:
        if name not in self._values:
            self._values[name] = self._makers[name]()
        return self._values[name]

    def values(self, names: Sequence[str]) -> dict[str, Any]:
        return {n: self.get(n) for n in names}


@dataclass(frozen=True)
class PointFailure:
    """A point that failed on every try: the analysis completes without it and names it."""
    label: str
    error: str

    def as_dict(self) -> dict:
        return {"point": self.label, "error": self.error}


@dataclass
class PointRun:
    results: list            #: per point, its JSON result (None where it failed)
    failures: list[PointFailure]
    computed: int            #: how many points were computed (the rest came from the cache)

    def settle(self, record: dict, path: Path, use_cache: bool) -> dict:
        """An analysis's record, finished: the failed points named in it, or, when none failed, the whole
        record cached at ``path`` (a record with holes is never cached whole: the next request computes
        only its missing points)."""
        if self.failures:
            record["failed"] = [f.as_dict() for f in self.failures]
        elif use_cache:
            write_json_atomic(path, record)
        return record

    def require_all(self, what: str) -> None:
        """Stop with an error naming the failed points, for results that must not have holes (a curve
        or a table with one would read as complete)."""
        if self.failures:
            names = "; ".join(f"{f.label}: {f.error}" for f in self.failures)
            raise TatrError(f"{len(self.failures)} of {len(self.results)} {what} failed on every try ({names})")


def record_path(zoo: Zoo, name: str, description: dict, point: bool = False) -> Path:
    """Where an analysis built from points caches its whole record (or, with ``point``, where one of its
    points is cached): named by ``description`` (what it computes from) and the precision asked for
    (:func:`tatr_core.evaluate.precision_key`) and, for a merge method past its first revision, that
    revision (:attr:`tatr_core.merge.registry.MergeMethod.revision`)."""
    from .cache import cache_dir, digest
    from .evaluate import precision_key
    from .merge import REGISTRY

    method_name = description.get("method")
    method = REGISTRY.get(method_name) if isinstance(method_name, str) else None
    if method is not None and method.revision > 1:  # revision 1 keeps the keys results were first stored under
        description = {**description, "revision": method.revision}
    key = digest({"zoo": zoo.key, **description, **precision_key()})
    return cache_dir("results", zoo.key, *(("points",) if point else ())) / f"{name}-{key}.json"


# ------------------------------------------------------------------------------ kinds
def _inputs(shared: dict) -> dict | None:
    return next(iter(shared.values()), None)


def _method(zoo: Zoo, evaluator, args: dict, shared: dict, progress: Progress) -> dict:
    from .runs import method_record

    return method_record(zoo, args["method"], args["params"], split=args["split"], sample=args["sample"],
                         seed=args["seed"], tasks=args["tasks"], evaluator=evaluator, inputs=_inputs(shared),
                         progress=progress)


def _subset(zoo: Zoo, evaluator, args: dict, shared: dict, progress: Progress) -> dict:
    from .runs import evaluate_merge, merge_inputs, merge_tasks

    inputs = _inputs(shared)
    if inputs is None:
        inputs = merge_inputs(zoo, args["params"], progress)
    res = merge_tasks(zoo, args["method"], args["params"], inputs, args["merged"], progress=progress)
    results = evaluate_merge(evaluator, res, args["tasks"], args["split"], args["sample"], args["seed"],
                             args.get("precision"))
    return {t: r.as_dict() for t, r in results.items()}


def _linear(zoo: Zoo, evaluator, args: dict, shared: dict, progress: Progress) -> dict:
    theta = zoo.task_vectors.pretrained
    for name, weight in args["terms"]:  # in order: the same sums, in the same order, on every executor
        theta = theta + weight * shared[name].to(theta.device)  # no copy when both are on one device
    results = evaluator.evaluate(theta, args["tasks"], args["split"], args["sample"], args["seed"],
                                 precision=args.get("precision"))
    return {t: r.as_dict() for t, r in results.items()}


KINDS: dict[str, Callable[..., Any]] = {"method": _method, "subset": _subset, "linear": _linear}


def compute_point(zoo: Zoo, evaluator, kind: str, args: dict, shared: dict, progress: Progress = no_progress):
    """One point, its shared inputs on the zoo's compute device when the memory rule allows (moved
    there once per process, and kept while they fit: :class:`tatr_core.placement.Residency`)."""
    shared = {name: zoo.resident(name, value) for name, value in shared.items()}
    return KINDS[kind](zoo, evaluator, args, shared, progress)


def linear_point(zoo: Zoo, label: str, terms: Sequence[tuple[str, float]], tasks: Sequence[str], split: str,
                 sample: int | None, seed: int, source: dict, precision: str | None = None) -> Point:
    """θ_pre + Σ weight·shared[name], evaluated on ``tasks``.  ``source`` says what the shared vectors are
    computed from (an analysis's parameters): with the terms it makes the point's cache key.
    ``precision="fp32"``: evaluated in float32 even where the evaluator uses bf16 (loss-based analyses)."""
    terms = [[n, float(w)] for n, w in terms]
    args = {"terms": terms, "tasks": list(tasks), "split": split, "sample": sample, "seed": seed}
    if precision is not None:
        args["precision"] = precision
    path = record_path(zoo, "linear", {"source": source, **args, "seed": seed if sample else None}, point=True)
    return Point("linear", args, label, path, tuple(n for n, _ in terms))


# ------------------------------------------------------------------------------ running them
def run_points(zoo: Zoo, points: Sequence[Point], *, shared: Shared | None = None, evaluator=None, executor=None,
               progress: Progress = no_progress, on_result: Callable[[int, Any], None] | None = None,
               what: str = "points") -> PointRun:
    """Compute every point not in the cache, with ``executor`` (default: :func:`executors.current_executor`).

    ``on_result(index, result)`` is called for each point as its result is known (cached ones first).
    A point that fails on every try (Ray) is left ``None`` and listed in ``failures``; an error in
    the analysis's input (:class:`tatr_core.errors.TatrError`) stops the run.
    """
    shared = shared or Shared()
    results: list = [None] * len(points)
    same: dict[Path, list[int]] = {}
    for i, p in enumerate(points):
        same.setdefault(p.path, []).append(i)

    def deliver(first: int, result) -> None:
        for j in same[points[first].path]:
            results[j] = result
            if on_result is not None:
                on_result(j, result)

    todo = []
    for path, indices in same.items():
        cached = lookup_json(path)
        if cached is None:
            todo.append(indices[0])
        else:
            deliver(indices[0], cached)
    if not todo:
        return PointRun(results, [], 0)
    from .executors import current_executor

    executor = executor or current_executor()
    total, done = len(same), len(same) - len(todo)
    failures: list[PointFailure] = []

    said = [f"{what}: {done}/{total} from the cache"]

    def point_progress(fraction: float, message: str) -> None:
        """Executors report here; an empty message is a heartbeat (the Ray executor's, while it waits),
        which repeats the last one: a cancelled job stops at it."""
        if message:
            said[0] = message
        progress((done + min(max(fraction, 0.0), 1.0)) / total, said[0])

    progress(done / total, said[0])
    for index, outcome in executor.run(zoo, [(i, points[i]) for i in todo], shared, evaluator, point_progress):
        done += 1
        if isinstance(outcome, PointFailure):
            failures.append(outcome)
        else:
            write_json_atomic(points[index].path, outcome)
            deliver(index, outcome)
        said[0] = f"{what}: {done}/{total}"
        progress(done / total, said[0])
    if failures:
        logging.getLogger("tatr_core").warning(
            "%d of %d %s failed on every try and are left out: %s", len(failures), len(points), what,
            "; ".join(f"{f.label} ({f.error})" for f in failures))
    return PointRun(results, failures, len(todo))
