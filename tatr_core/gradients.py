"""Per-task gradients at θ_pre over seeded exemplars: G_k = E|∇L_k(x)| (Eq. 6) and E∇L_k(x).

The absolute value is taken per sample, then averaged.  Per-sample gradients come from
``torch.func.vmap(torch.func.grad(...))`` over chunks of exemplars; the loss is cross-entropy
with the task's fixed zero-shot head.  Results are cached under ``cache/grads/`` by zoo,
exemplar count and seed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from .cache import cached_tensors, honours_no_cache
from .checkpoints import save_safetensors
from .errors import TatrError
from .paths import inside, safe_name
from .keys import Spec
from .placement import compute_device, free_memory_bytes
from .models import channel_stats, head_logits, normalise
from .zoo import Progress, Zoo, no_progress


@dataclass
class TaskGradients:
    """``abs_mean`` = (K, N) E|∇L_k|, ``mean`` = (K, N) E∇L_k, aligned with ``zoo.task_vectors``."""

    abs_mean: torch.Tensor
    mean: torch.Tensor
    exemplars: int
    seed: int


def exemplar_indices(n_train: int, exemplars: int, seed: int, task: str) -> torch.Tensor:
    if exemplars <= 0:
        raise TatrError(f"the number of exemplars must be at least 1, got {exemplars}")
    if exemplars > n_train:
        raise TatrError(f"task '{task}' has {n_train} training images; ask for at most {n_train} exemplars")
    g = torch.Generator().manual_seed(seed * 7919 + sum(map(ord, task)))
    return torch.randperm(n_train, generator=g)[:exemplars]


def _chunk_size(n_params: int, device="cpu", cap_bytes: float = 1.5e9) -> int:
    """Exemplars per vmap chunk: their per-sample gradients (and |·|, 8 bytes per parameter each)
    fit in a quarter of the memory free on the device, and in ``cap_bytes``."""
    budget = min(cap_bytes, free_memory_bytes(device) / 4)
    return int(max(1, min(64, budget // (8 * n_params))))


def per_sample_gradient_stats(encoder, keys, head, mean, std, images, labels, chunk: int | None = None):
    """(E|g|, E g) over samples of the per-sample gradients of CE(head(encoder(x)), y) w.r.t. ``keys``.

    Parameters of the encoder outside ``keys`` (the projection a Hugging Face ``CLIPVisionModel``
    zoo carries over from θ_pre, say) enter as constants, and no autograd graph is recorded:
    memory is bounded by one chunk, whatever the number of exemplars.
    """
    named = dict(encoder.named_parameters())
    missing = [k for k in keys if k not in named]
    if missing:
        raise TatrError(f"parameters {missing[:3]} are not parameters of the encoder")
    params = {k: v.detach() for k, v in named.items() if k in keys}
    constants = {k: v.detach() for k, v in named.items() if k not in keys}

    def loss(p, x, y):
        feats = functional_call(encoder, {**constants, **p}, (x.unsqueeze(0),), strict=False)
        return F.cross_entropy(head_logits(feats, head), y.unsqueeze(0))

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))
    n_params = sum(v.numel() for v in params.values())
    chunk = chunk or _chunk_size(n_params, images.device)
    abs_sum = {k: torch.zeros_like(v) for k, v in params.items()}
    sum_ = {k: torch.zeros_like(v) for k, v in params.items()}
    # torch.func.grad differentiates inside no_grad; no_grad only stops a graph around it
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):  # vmap has no batching rule for fused attention
        for start in range(0, len(labels), chunk):
            x = normalise(images[start:start + chunk], mean, std)
            g = per_sample(params, x, labels[start:start + chunk])
            for k in params:
                abs_sum[k] += g[k].abs().sum(0)
                sum_[k] += g[k].sum(0)
            del g
    n = len(labels)
    return {k: v / n for k, v in abs_sum.items()}, {k: v / n for k, v in sum_.items()}


def exemplars_of(zoo: Zoo, task: str, exemplars: int, seed: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The seeded training exemplars of ``task`` (uint8 images, labels) on ``device``."""
    images, labels = zoo.tasks[task].split("train")
    idx = exemplar_indices(len(labels), exemplars, seed, task)
    return images[idx].to(device), labels[idx].to(device)


def gradients_spec(zoo: Zoo, exemplars: int, seed: int) -> Spec:
    """The spec of the gradients of a zoo over ``exemplars`` seeded exemplars per task."""
    return Spec.of("grads", zoo.key, {"n": exemplars, "seed": seed, "tasks": zoo.task_names}, precision="auto")


def gradients_path(zoo: Zoo, exemplars: int, seed: int) -> Path:
    """Where the gradients of a zoo over ``exemplars`` seeded exemplars per task are cached."""
    return gradients_spec(zoo, exemplars, seed).path()


@honours_no_cache
def compute_task_gradients(zoo: Zoo, exemplars: int = 128, seed: int = 0, device=None,
                           progress: Progress = no_progress, use_cache: bool = True) -> TaskGradients:
    """E|∇L_k| and E∇L_k at θ_pre for every task of the zoo, over ``exemplars`` training images each."""
    tv = zoo.host_task_vectors
    path = gradients_path(zoo, exemplars, seed)

    def compute() -> dict[str, torch.Tensor]:
        dev = torch.device(device) if device is not None else compute_device()
        encoder = zoo.make_encoder().to(dev)
        mean, std = channel_stats(zoo.mean, zoo.std, dev)
        keys = set(tv.layout.keys)
        abs_mean = torch.empty((tv.K, tv.N), dtype=tv.dtype)
        signed = torch.empty((tv.K, tv.N), dtype=tv.dtype)
        for k, task in enumerate(zoo.task_names):
            progress(k / tv.K, f"gradients at θ_pre: {task} ({exemplars} exemplars)")
            head = zoo.tasks[task].head.to(dev, torch.float32)
            g_abs, g = per_sample_gradient_stats(encoder, keys, head, mean, std,
                                                 *exemplars_of(zoo, task, exemplars, seed, dev))
            tv.layout.flatten({n: v.cpu() for n, v in g_abs.items()}, tv.dtype, task, out=abs_mean[k])
            tv.layout.flatten({n: v.cpu() for n, v in g.items()}, tv.dtype, task, out=signed[k])
        progress(1.0, "gradients done")
        return {"abs_mean": abs_mean, "mean": signed}

    sd = cached_tensors(path, compute, use_cache)
    sd = zoo.resident(f"gradients-{exemplars}-{seed}", sd)  # on the compute device when they fit
    return TaskGradients(sd["abs_mean"], sd["mean"], exemplars, seed)


def write_gradient_files(zoo: Zoo, grads: TaskGradients, out_dir: str | os.PathLike) -> list[Path]:
    """Per task, ``<task>.grads.safetensors`` (E|∇L_k|) and ``<task>.signed_grads.safetensors`` (E∇L_k),
    keyed like the model: the files ``merge --grads`` / ``--signed-grads`` take."""
    out = Path(out_dir)
    layout = zoo.task_vectors.layout
    written = []
    meta = {"exemplars": str(grads.exemplars), "seed": str(grads.seed), "zoo": zoo.name}
    files = [(inside(out, f"{safe_name(task)}.{kind}.safetensors"), tensor)  # every name checked before a write
             for k, task in enumerate(zoo.task_names)
             for kind, tensor in (("grads", grads.abs_mean[k]), ("signed_grads", grads.mean[k]))]
    for path, tensor in files:
        written.append(save_safetensors(layout.unflatten(tensor.clone()), path, meta))
    return written
