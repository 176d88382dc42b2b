"""Geometry of the task vectors Δ_k = θ_k − θ_pre: their norms, pairwise cosine similarities and
how many dimensions two task vectors both move (the overlap where conflicts can arise)."""
from __future__ import annotations

import torch

from ..zoo import Zoo


def task_vector_geometry(zoo: Zoo) -> dict:
    """``{"tasks", "norms", "cosine": K×K, "overlap": K×K share of the top-10% magnitude dimensions shared}``."""
    deltas = zoo.task_vectors.deltas.double()
    norms = deltas.norm(dim=1)
    unit = deltas / norms.clamp_min(1e-30)[:, None]
    cosine = unit @ unit.T
    k = max(1, deltas.shape[1] // 10)
    top = torch.zeros_like(deltas, dtype=torch.bool)
    top.scatter_(1, deltas.abs().topk(k, dim=1).indices, True)
    shared = top.double() @ top.double().T / k
    return {"tasks": zoo.task_names, "norms": norms.tolist(), "cosine": cosine.tolist(), "overlap": shared.tolist(),
            "N": int(deltas.shape[1])}
