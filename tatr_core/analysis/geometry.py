"""Geometry of the task vectors Δ_k = θ_k − θ_pre: their norms, pairwise cosine similarities and
how many dimensions two task vectors both move (the overlap where conflicts can arise)."""
from __future__ import annotations

import torch

from ..keys import Spec
from ..trust_region import CHUNK, top_k_mask
from ..zoo import Zoo
from .registry import Context, has_keys, register


def geometry_spec(zoo: Zoo) -> Spec:
    """The spec of :func:`task_vector_geometry` (it depends on the task vectors only)."""
    return Spec.of("geometry", zoo.key, {}, precision="auto")


@register("geometry", "task-vector geometry", has_keys("tasks", "norms", "cosine", "overlap"),
          lambda args: "norms and cosines of the task vectors")
def _geometry(zoo: Zoo, args: dict, ctx: Context) -> dict:
    return task_vector_geometry(zoo)


def task_vector_geometry(zoo: Zoo) -> dict:
    """``{"tasks", "norms", "cosine": K×K, "overlap": K×K share of the top-10% magnitude dimensions shared}``.

    The K×K Gram matrix is accumulated in float64 over column blocks, on the task vectors' device:
    beside the (K, N) task vectors this holds one bool mask per entry and K × :data:`CHUNK` floats,
    not float64 copies of the whole (K, N).  A task's top 10% are exactly ⌊N/10⌋ dimensions
    (ties by the lower index, as every selection here).
    """
    deltas = zoo.task_vectors.deltas
    K, N = deltas.shape
    k = max(1, N // 10)
    top = torch.stack([top_k_mask(deltas[i].abs(), k) for i in range(K)])
    gram = torch.zeros((K, K), dtype=torch.float64, device=deltas.device)
    shared = torch.zeros_like(gram)
    for start in range(0, N, CHUNK):
        block = deltas[:, start:start + CHUNK].double()
        gram += block @ block.T
        mask = top[:, start:start + CHUNK].double()
        shared += mask @ mask.T
    norms = gram.diagonal().sqrt()
    safe = norms.clamp_min(1e-30)
    cosine = gram / torch.outer(safe, safe)
    cosine.fill_diagonal_(1.0)
    cosine[norms == 0] = 0.0  # a task vector of zeros points nowhere
    cosine[:, norms == 0] = 0.0
    return {"tasks": zoo.task_names, "norms": norms.tolist(), "cosine": cosine.clamp(-1, 1).tolist(),
            "overlap": (shared / k).tolist(), "N": int(N)}
