"""Shared pieces of the data-using merge methods (AdaMerging, Surgery, Fisher, RegMean).

* :func:`subset` — the task vectors of the tasks taking part (indices into the zoo) and their names;
* :func:`plugin_region` — the TATR trust region of those task vectors (Eq. 12/13 plug-in), None at τ = 0,
  and :func:`masked` — a vector times its mask;
* :func:`unlabelled_batch` — a seeded batch of a task's test images, normalised (labels never used);
* :func:`fit_spec` — the spec (the cache entry) of a fitted result: learned coefficients, Surgery modules.

Every loop here is seeded and runs on CUDA when present, on the CPU otherwise.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..keys import Spec
from ..trust_region import TrustRegion, check_tau
from ..vectors import TaskVectors


def subset(zoo, task_indices: Sequence[int] | None) -> tuple[TaskVectors, list[str], list[int]]:
    idx = list(range(len(zoo.task_names))) if task_indices is None else list(task_indices)
    tv = zoo.task_vectors if task_indices is None else zoo.task_vectors.subset(idx)
    return tv, [zoo.task_names[i] for i in idx], idx


def plugin_region(tv: TaskVectors, params: dict, inputs: dict, idx: list[int], all_tasks: bool) -> TrustRegion | None:
    """The trust region of ``tv`` at ``params['tau']`` (None when τ = 0: the method without the plug-in)."""
    if check_tau(params["tau"]) == 0:
        return None
    from . import compute_trust_region

    aux = inputs if all_tasks else {k: v[idx] for k, v in inputs.items()}
    return compute_trust_region(tv, params["tau"], params["sensitivity"], aux.get("grads"), aux.get("signed_grads"))


def masked(vector: torch.Tensor, region: TrustRegion | None) -> torch.Tensor:
    """``vector ⊙ m`` inside the trust region; ``vector`` itself without one (τ = 0 or nothing excluded)."""
    return vector * region.keep if region is not None and region.keep is not None else vector


def device_of(device=None) -> torch.device:
    from ..evaluate import default_device

    return torch.device(device) if device is not None else default_device()


def unlabelled_batch(images_uint8: torch.Tensor, batch: int, generator: torch.Generator, mean, std) -> torch.Tensor:
    """``batch`` images drawn without replacement (a fresh permutation per call), normalised."""
    from ..models import normalise

    pick = torch.randperm(len(images_uint8), generator=generator)[:batch]
    return normalise(images_uint8[pick.to(images_uint8.device)], mean, std)


def fit_spec(zoo, method: str, payload: dict, tensors: bool = False) -> Spec:
    """What ``method`` learned from ``payload`` (its parameters and tasks): its JSON record, or with
    ``tensors`` its learned tensors (Surgery's modules)."""
    return Spec.of("fit-tensors" if tensors else "fit", zoo.key, {"method": method, **payload}, precision="auto")
