"""The one registry of merge methods.

A method is a small unit: ``combine(task_vectors, params) -> merged task vector (N,)``.
:func:`tatr_core.merge.merge` then applies the TATR trust-region plug-in (Eqs. 10–11)
and the scaling: θ = θ_pre + λ · (merged ⊙ m).  Register new methods with
:func:`register`; pages, the CLI and the analyses list them from :data:`REGISTRY`.
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
    combine: Combine
    default_lam: float | None = 0.3  #: None: the method has no λ (it is fixed to 1)
    params: dict[str, float] = field(default_factory=dict)  #: extra parameters and their defaults
    default_tau: float = 0.0  #: trust-region fraction used when none is given
    plugin: bool = True  #: the TATR trust-region mask applies to its merged task vector


REGISTRY: dict[str, MergeMethod] = {}


def register(name: str, label: str, summary: str, *, default_lam: float | None = 0.3,
             params: dict[str, float] | None = None, default_tau: float = 0.0) -> Callable[[Combine], Combine]:
    def deco(fn: Combine) -> Combine:
        if name in REGISTRY:
            raise ValueError(f"merge method '{name}' registered twice")
        REGISTRY[name] = MergeMethod(name, label, summary, fn, default_lam, dict(params or {}), default_tau)
        return fn
    return deco
