"""WUDI-Merging (Cheng et al., ICML 2025, "Whoever Started the Interference Should End It: Guiding
Data-Free Model Merging via Task Vectors"), following FusionBench's ``wudi_merging``.

Each task vector stands in for its task's inputs: for every 2-D weight, the merged matrix τ_m is
found by gradient steps on the interference it causes along each task's own directions,

    L(τ_m) = Σ_k ‖(τ_m − τ_k) τ_kᵀ‖²_F / ‖τ_k‖²_F,

starting from the sum Σ_k τ_k, with Adam (learning rate 1e-5, no weight decay) for ``steps`` steps;
every other tensor is the mean of the task vectors.  θ = θ_pre + merged (no λ).

The loss is quadratic, so its gradient is 2 (τ_m A − B) with A = Σ_k G_k / ‖τ_k‖², B = Σ_k τ_k G_k /
‖τ_k‖² and G_k = τ_kᵀ τ_k, formed once per matrix: one GEMM a step instead of the K batched products
of the released loop (the same steps, to rounding).  A task whose matrix is zero adds nothing (the
released loop divides by its zero norm).  Runs where the task vectors live (the GPU when there is one).
Defaults: 300 steps (the released function's; FusionBench's CLIP config uses 400) and Adam's 1e-5.
"""
from __future__ import annotations

import torch

from ..vectors import TaskVectors
from .registry import Param, register

STEPS = Param("steps", int, 300, "Adam steps on each matrix's interference loss", low=1, grid=(50, 100, 300, 400, 1000),
              label="steps", source="the released wudi_merging's iter_num 300 (Cheng et al., 2025; FusionBench)")
LR = Param("lr", float, 1e-5, "Adam learning rate", low=0.0, low_open=True, grid=(1e-6, 3e-6, 1e-5, 3e-5, 1e-4),
           label="learning rate (Adam)", source="the released code's Adam lr 1e-5 (Cheng et al., 2025)")


def interference_terms(tasks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) of the loss's gradient 2(τ_m A − B) for task matrices ``tasks`` (K, m, n)."""
    m, n = tasks.shape[1:]
    a = torch.zeros(n, n, dtype=tasks.dtype, device=tasks.device)
    b = torch.zeros(m, n, dtype=tasks.dtype, device=tasks.device)
    for t in tasks:
        norm = t.pow(2).sum()
        if float(norm) > 0:
            gram = (t.T @ t) / norm
            a += gram
            b += t @ gram
    return a, b


def wudi_matrix(tasks: torch.Tensor, steps: int, lr: float) -> torch.Tensor:
    """τ_m for one weight from its task matrices (K, m, n): Adam on the interference loss from their sum."""
    a, b = interference_terms(tasks)
    param = torch.nn.Parameter(tasks.sum(0).clone())
    opt = torch.optim.Adam([param], lr=lr, weight_decay=0)
    for _ in range(steps):
        param.grad = 2 * (param.detach() @ a - b)
        opt.step()
    return param.detach()


@register("wudi", "WUDI-Merging", "per matrix, the merge whose interference with every task vector's own directions "
          "is smallest, by gradient steps from their sum (Cheng et al., 2025)", params=(STEPS, LR), order=118,
          reference="Cheng et al., 2025")
def wudi(tv: TaskVectors, p: dict) -> torch.Tensor:
    merged = tv.deltas.mean(0)
    for key, sl, shape in tv.layout.items():
        if len(shape) == 2:
            merged[sl] = wudi_matrix(tv.deltas[:, sl].view(tv.K, *shape), p["steps"], p["lr"]).reshape(-1)
    return merged
