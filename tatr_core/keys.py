"""The one place where cache keys are made: a frozen :class:`Spec` per computation, and one
versioning scheme for all of them.

A spec says what is computed (its *kind*), on which zoo (the zoo's content key), from what (its
arguments: method, parameters, split, sample, ...), and with which arithmetic (the precision asked
for, :mod:`tatr_core.options`).  ``spec.key()`` is the key that the on-disk cache, the dashboard's
background jobs, the analyses' points and the executors all use: two requests for the same
computation, from two pages or two processes, have one key, so they are one job and one cache entry.

**Versioning.**  Every revisioned thing has one entry in :data:`REVISIONS`: each kind of cached
computation (:data:`KINDS`, declared below) and each merge method (declared by
:func:`tatr_core.merge.registry.register`, ``revision=``).  A spec's key folds in its kind's
revision and, when its arguments name a method, that method's; bump one when what it computes
changes meaning, and no entry of the older code is found again.

Where an entry lives: ``<cache root>/<kind's folder>/<zoo key>/[<sub>/]<kind>-<key><suffix>``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import options
from .cache import cache_dir, digest, load_record, store_record

#: name -> revision: every kind of cached computation, and every merge method ("method <name>")
REVISIONS: dict[str, int] = {}


@dataclass(frozen=True)
class Kind:
    name: str
    folder: str  #: the cache folder (under the cache root)
    revision: int
    what: str
    suffix: str = ".json"
    sub: str = ""  #: a subfolder of the zoo's folder ("points")


def declare(name: str, revision: int) -> None:
    """Record the revision of a kind or a method (``"method tsv"``); declaring one twice is a bug."""
    if name in REVISIONS and REVISIONS[name] != revision:
        raise ValueError(f"'{name}' declared with revisions {REVISIONS[name]} and {revision}")
    REVISIONS[name] = int(revision)


KINDS: dict[str, Kind] = {}
for _kind in (
    # tensors
    Kind("data", "data", 2, "a manifest task split's preprocessed images, a file mapped into memory", ".images"),
    Kind("vectors", "vectors", 1, "a manifest zoo's (K, N) task vectors, a file mapped into memory", ".bin"),
    Kind("grads", "grads", 1, "E|∇L_k| and E∇L_k at θ_pre over seeded exemplars", ".safetensors"),
    Kind("fisher", "fisher", 1, "one task's diagonal Fisher", ".safetensors"),
    Kind("regmean", "regmean", 1, "one task's RegMean input Grams", ".safetensors"),
    # results (JSON records)
    Kind("method", "results", 1, "one evaluation of a method or a baseline: a table row, a sweep point"),
    Kind("subset", "results", 1, "a method merged on a subset of the tasks and evaluated", sub="points"),
    Kind("linear", "results", 1, "θ_pre + Σ w·v for shared vectors v, evaluated: a landscape or component point",
         sub="points"),
    Kind("conflict", "results", 1, "knowledge conflicts C_{j|i}"),
    Kind("components", "results", 1, "Δ⁺ / Δ⁻ / Δ⊥ of the other tasks' vector, per task"),
    Kind("merged-components", "results", 1, "Figure 2(a): merged models of one component"),
    Kind("landscape", "results", 1, "losses on the Δ⊥ / Δ⁺ / Δ⁻ plane"),
    Kind("disentanglement", "results", 1, "the weight-disentanglement error ξ(α₁, α₂) of two tasks"),
    Kind("layers", "results", 2, "per-layer sensitivity, excluded fractions and the Ω histogram (2: blocks by depth)"),
    Kind("tsv", "results", 1, "singular-value spectra and singular task interference"),
    Kind("geometry", "results", 1, "norms, cosine similarities and overlap of the task vectors"),
    Kind("fit", "results", 1, "what a data-using method learned: coefficients, Surgery modules"),
    Kind("fit-tensors", "results", 1, "the tensors a data-using method learned", ".safetensors"),
    # page requests that combine analyses (job keys; their parts are cached as the kinds above)
    Kind("sweeps", "results", 1, "several sweep curves, as one page shows them"),
    Kind("table", "results", 1, "a method table in the paper's layout"),
):
    KINDS[_kind.name] = _kind
    declare(f"kind {_kind.name}", _kind.revision)


def canonical(args: Any) -> str:
    """``args`` as canonical JSON (keys sorted): the text a spec's key is made from."""
    return json.dumps(args, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Spec:
    """One computation: ``kind`` on zoo ``zoo`` from ``args``, in the precision ``precision`` (empty: auto)."""

    kind: str
    zoo: str
    args: str  #: canonical JSON (:func:`canonical`): frozen, and hashable
    precision: str = ""

    @classmethod
    def of(cls, kind: str, zoo: str, args: dict | None = None, *, precision: str | None = None) -> "Spec":
        """The spec of ``kind`` on zoo key ``zoo``; the precision is the one asked for now unless given."""
        if kind not in KINDS:
            raise KeyError(f"unknown kind of computation '{kind}'; declare it in tatr_core.keys.KINDS")
        asked = options.current().precision if precision is None else precision
        return cls(kind, zoo, canonical(args or {}), "" if asked == "auto" else asked)

    @property
    def arguments(self) -> dict:
        return json.loads(self.args)

    def revisions(self) -> dict[str, int]:
        """The revisions this spec's key folds in: its kind's, and its method's when it names one."""
        out = {"kind": REVISIONS[f"kind {self.kind}"]}
        args = self.arguments
        method = args.get("method")
        if isinstance(method, str) and f"method {method}" in REVISIONS:
            out["method"] = REVISIONS[f"method {method}"]
        methods = args.get("methods")  # a request over several methods (the Sweeps page's curves)
        if isinstance(methods, list):
            out |= {f"method {m}": REVISIONS[f"method {m}"] for m in methods
                    if isinstance(m, str) and f"method {m}" in REVISIONS}
        return out

    def key(self) -> str:
        """The one key of this computation (cache entry, background job, point)."""
        return digest({"kind": self.kind, "zoo": self.zoo, "args": self.args, "revisions": self.revisions(),
                       "precision": self.precision})

    def path(self) -> Path:
        """Where its entry lives in the cache (the folder is made when missing)."""
        kind = KINDS[self.kind]
        parts = [p for p in (self.zoo, kind.sub) if p]
        return cache_dir(kind.folder, *parts) / f"{self.kind}-{self.key()}{kind.suffix}"

    def load(self, check=None) -> Any | None:
        """Its cached record, verified (:func:`tatr_core.cache.load_record`); None when there is none to serve."""
        return load_record(self.path(), self.key(), check)

    def store(self, record: Any) -> None:
        """Cache ``record`` as this spec's result (with what its key is made from, for a reader of the cache)."""
        store_record(self.path(), self.key(), record, self.describe())

    def describe(self) -> dict:
        """What the key is made from, as JSON (written beside a cached record, for a reader of the cache)."""
        return {"kind": self.kind, "zoo": self.zoo, "args": self.arguments, "revisions": self.revisions(),
                "precision": self.precision or "auto"}
