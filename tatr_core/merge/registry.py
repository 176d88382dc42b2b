"""The one registry of merge methods.

A task-vector method is a small unit: ``combine(task_vectors, params) -> merged task vector (N,)``.
:func:`tatr_core.merge.merge` then applies the TATR trust-region plug-in (Eqs. 10–11)
and the scaling: θ = θ_pre + λ · (merged ⊙ m).

A data-using method (AdaMerging, Surgery, Fisher, RegMean) has ``fit`` instead:
``fit(zoo, params, task_indices, inputs, progress) -> MergeResult``; it learns or measures
something on the zoo's images, then merges (:mod:`tatr_core.merge.data`).  Register new methods
with :func:`register`; pages, the CLI and the analyses list them from :data:`REGISTRY`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..vectors import TaskVectors

Combine = Callable[[TaskVectors, dict], torch.Tensor]


@dataclass(frozen=True)
class MergeMethod:
    name: str  #: CLI / registry name
    label: str  #: name in the paper's tables
    summary: str  #: one line for help texts and pages
    combine: Combine | None
    default_lam: float | None = 0.3  #: None: the method has no λ (it is fixed to 1, or learned)
    params: dict[str, float | int | str] = field(default_factory=dict)  #: extra parameters and their defaults
    default_tau: float = 0.0  #: trust-region fraction used when none is given
    plugin: bool = True  #: the TATR trust-region mask applies to its merged task vector
    fit: Callable | None = None  #: data-using methods: fit(zoo, params, task_indices, inputs, progress)
    choices: dict[str, tuple] = field(default_factory=dict)  #: allowed values of string parameters
    group: str = "Training-free methods"  #: the row group of the paper's Table 1

    @property
    def uses_data(self) -> bool:
        return self.fit is not None


REGISTRY: dict[str, MergeMethod] = {}


def register(name: str, label: str, summary: str, *, default_lam: float | None = 0.3,
             params: dict | None = None, default_tau: float = 0.0, choices: dict | None = None,
             uses_data: bool = False, group: str | None = None) -> Callable:
    """Decorator: ``combine`` for a task-vector method, or ``fit`` when ``uses_data``."""
    def deco(fn):
        if name in REGISTRY:
            raise ValueError(f"merge method '{name}' registered twice")
        REGISTRY[name] = MergeMethod(name, label, summary, None if uses_data else fn, default_lam, dict(params or {}),
                                     default_tau, fit=fn if uses_data else None, choices=dict(choices or {}),
                                     group=group or ("Test-time training methods" if uses_data
                                                     else "Training-free methods"))
        return fn
    return deco
