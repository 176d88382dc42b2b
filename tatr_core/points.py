"""Analyses as sets of points: each point is one merge (or one point of a plane) and one evaluation,
with a spec of its own (:class:`tatr_core.keys.Spec`: its cache entry and its key on every executor).

Sweeps, conflict matrices, landscapes, component accuracies, method tables and the validation
search are each a list of independent :class:`Point`\\ s, which :func:`tatr_core.executors.run_points`
looks up in the cache and hands, when missing, to an executor (this process, or Ray actors).

Kinds of point (:data:`KINDS`), each computed by a function of :mod:`tatr_core.runs`:

* ``method``: one :func:`tatr_core.runs.method_record` (a row of a table, a point of a sweep or of
  the validation search), its spec the one :func:`tatr_core.runs.evaluate_method` caches under;
* ``subset``: a method re-run on a subset of the tasks and evaluated on given tasks (the conflict
  matrix's leave-one-out merges, Table 4's merge without the held-out tasks);
* ``linear``: θ_pre + Σ_c w_c·v_c for shared flat vectors v_c (a landscape's grid point, the merged
  model of one component), evaluated on given tasks.

Large inputs that many points use (the per-task gradients, the components that span a plane) are
:class:`Shared`.  The driver computes each once, and only when some point misses the cache; a Ray
run sends it to the workers once, through the object store.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .errors import TatrError
from .keys import Spec
from .runs import is_method_record, is_task_results, linear_record, method_record, subset_record
from .zoo import Progress, Zoo, no_progress


@dataclass(frozen=True)
class Point:
    spec: Spec                    #: its kind (a key of :data:`KINDS`), arguments and cache entry
    label: str                    #: names the point in progress messages and failure reports
    shared: tuple[str, ...] = ()  #: names of the :class:`Shared` inputs it uses

    @property
    def kind(self) -> str:
        return self.spec.kind


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

    def mark_failures(self, record: dict) -> dict:
        """An analysis's record with the points that failed named in it (``"failed"``): such a record is
        never cached whole (:func:`tatr_core.analysis.registry.run`), so the next request computes only
        its missing points."""
        if self.failures:
            record["failed"] = [f.as_dict() for f in self.failures]
        return record

    def require_all(self, what: str) -> None:
        """Stop with an error naming the failed points, for results that must not have holes (a curve
        or a table with one would read as complete)."""
        if self.failures:
            names = "; ".join(f"{f.label}: {f.error}" for f in self.failures)
            raise TatrError(f"{len(self.failures)} of {len(self.results)} {what} failed on every try ({names})")


# ------------------------------------------------------------------------------ kinds
def _inputs(shared: dict) -> dict | None:
    return next(iter(shared.values()), None)


def _method(zoo: Zoo, evaluator, args: dict, shared: dict, progress: Progress) -> dict:
    return method_record(zoo, args["method"], args["params"], split=args["split"], sample=args["sample"],
                         seed=args["seed"] or 0, tasks=args["tasks"], evaluator=evaluator, inputs=_inputs(shared),
                         progress=progress)


def _subset(zoo: Zoo, evaluator, args: dict, shared: dict, progress: Progress) -> dict:
    return subset_record(zoo, evaluator, args["method"], args["params"], args["merged"], args["tasks"], args["split"],
                         args["sample"], args["seed"], _inputs(shared), args.get("precision"), progress)


def _linear(zoo: Zoo, evaluator, args: dict, shared: dict, progress: Progress) -> dict:
    return linear_record(zoo, evaluator, args["terms"], shared, args["tasks"], args["split"], args["sample"],
                         args["seed"], args.get("precision"), bool(args.get("predictions")))


#: kind -> (compute(zoo, evaluator, args, shared, progress), the shape its record must have)
KINDS: dict[str, tuple[Callable[..., Any], Callable[[Any], bool]]] = {
    "method": (_method, is_method_record), "subset": (_subset, is_task_results), "linear": (_linear, is_task_results)}


def record_check(point: Point) -> Callable[[Any], bool]:
    """The shape a cached result of ``point`` must have to be served."""
    return KINDS[point.kind][1]


def compute_point(zoo: Zoo, evaluator, point: Point, shared: dict, progress: Progress = no_progress):
    """One point, its shared inputs on the zoo's compute device when the memory rule allows (moved
    there once per process, and kept while they fit: :class:`tatr_core.placement.Residency`)."""
    shared = {name: zoo.resident(name, value) for name, value in shared.items()}
    return KINDS[point.kind][0](zoo, evaluator, point.spec.arguments, shared, progress)


def method_point(spec: Spec, label: str, inputs: str | None = None) -> Point:
    """The evaluation ``spec`` (of kind ``method``: :func:`tatr_core.runs.method_spec`) as a point."""
    return Point(spec, label, (inputs,) if inputs else ())


def subset_point(zoo: Zoo, method: str, params: dict, merged: list[int] | None, tasks: Sequence[str], split: str,
                 sample: int | None, seed: int, label: str, inputs: str | None = None,
                 precision: str | None = None) -> Point:
    """``method`` merged on the tasks ``merged`` (None: all) and evaluated on ``tasks``
    (in float32 with ``precision="fp32"``)."""
    args = {"method": method, "params": params, "merged": merged, "tasks": list(tasks), "split": split,
            "sample": sample, "seed": seed, **({"precision": precision} if precision else {})}
    return Point(Spec.of("subset", zoo.key, args), label, (inputs,) if inputs else ())


def linear_point(zoo: Zoo, label: str, terms: Sequence[tuple[str, float]], tasks: Sequence[str], split: str,
                 sample: int | None, seed: int, source: dict, precision: str | None = None,
                 predictions: bool = False) -> Point:
    """θ_pre + Σ weight·shared[name], evaluated on ``tasks``.  ``source`` says what the shared vectors are
    computed from (an analysis's parameters): with the terms it makes the point's key.
    ``precision="fp32"``: evaluated in float32 even where the evaluator uses bf16 (loss-based analyses).
    ``predictions``: the record also holds each image's predicted class (what ξ compares)."""
    terms = [[n, float(w)] for n, w in terms]
    args = {"terms": terms, "tasks": list(tasks), "split": split, "sample": sample, "seed": seed if sample else 0,
            "source": source}
    if precision is not None:
        args["precision"] = precision
    if predictions:
        args["predictions"] = True
    return Point(Spec.of("linear", zoo.key, args), label, tuple(n for n, _ in terms))
