"""Fisher merging (Matena & Raffel, 2022): a parameter-wise weighted average of the fine-tuned models.

F_k = E_x Σ_y p_k(y|x) (∂ log p_k(y|x) / ∂θ)² is the diagonal Fisher of fine-tuned model k (its
own head) on ``exemplars`` training images of its task, with the expectation over the model's
own predictive distribution taken exactly (up to 64 classes; sampled labels beyond).  θ = θ_pre + Σ_k F_k Δ_k / Σ_k F_k (where no model has
any Fisher mass, the plain average).  With the TATR plug-in the trust-region mask multiplies the
merged task vector.  Each task's Fisher is cached (safetensors).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..cache import cached_tensors, honours_no_cache
from ..keys import Spec
from .fitting import device_of, masked, plugin_region, subset
from .registry import EXEMPLARS, register


def fisher_merge(deltas: torch.Tensor, fishers: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Σ_k F_k Δ_k / Σ_k F_k, entry by entry; entries where Σ_k F_k = 0 take the plain mean of Δ."""
    den = fishers.sum(0)
    merged = (fishers * deltas).sum(0) / den.clamp_min(1e-30)
    return torch.where(den > eps, merged, deltas.mean(0))


def diagonal_fisher(encoder, weights: dict, head: torch.Tensor, images: torch.Tensor, mean, std,
                    max_classes: int = 64, samples: int = 8, seed: int = 0, chunk: int | None = None
                    ) -> dict[str, torch.Tensor]:
    """E_x Σ_y p(y|x) g_y(x)², g_y = ∂ log p(y|x)/∂θ, per parameter of ``weights``.

    Exact over the classes when there are at most ``max_classes`` of them; otherwise a Monte-Carlo
    estimate from ``samples`` labels per image drawn from p(·|x) (seeded), as Matena & Raffel do for
    large output spaces.  Gradients come from ``vmap(grad)`` over (image, class) pairs, in chunks
    sized to a memory budget, so ViT-B/32 with hundreds of classes stays within a few GiB.
    """
    from ..gradients import _chunk_size
    from ..models import head_logits, normalise

    def log_prob(p, x, y):
        logits = head_logits(functional_call(encoder, p, (x.unsqueeze(0),), strict=False), head)
        return torch.gather(F.log_softmax(logits, -1)[0], 0, y.reshape(1))[0]  # vmap-friendly indexing

    per_pair = vmap(grad(log_prob), in_dims=(None, 0, 0))
    n_params = sum(v.numel() for v in weights.values())
    chunk = chunk or _chunk_size(n_params, images.device)
    generator = torch.Generator().manual_seed(seed)
    total = {k: torch.zeros_like(v) for k, v in weights.items()}
    for start in range(0, len(images), chunk):
        x = normalise(images[start:start + chunk], mean, std)
        with torch.no_grad():
            probs = F.softmax(head_logits(functional_call(encoder, weights, (x,), strict=False), head), -1)
        C = probs.shape[1]
        if C <= max_classes:  # every (image, class) pair, weighted by p(class | image)
            rows = torch.arange(len(x), device=x.device).repeat_interleave(C)
            cols = torch.arange(C, device=x.device).repeat(len(x))
            w = probs.reshape(-1)
        else:  # labels sampled from the model's predictive distribution
            cols = torch.multinomial(probs.cpu(), samples, replacement=True, generator=generator).reshape(-1).to(x.device)
            rows = torch.arange(len(x), device=x.device).repeat_interleave(samples)
            w = torch.full((len(cols),), 1.0 / samples, device=x.device, dtype=probs.dtype)
        for s in range(0, len(rows), chunk):
            r, c, ws = rows[s:s + chunk], cols[s:s + chunk], w[s:s + chunk]
            # no graph around torch.func.grad (it differentiates inside no_grad), fused attention off for vmap
            with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
                g = per_pair(weights, x[r], c)
            for k, gk in g.items():
                total[k] += torch.einsum("n,n...->...", ws, gk.pow(2))
    return {k: v / len(images) for k, v in total.items()}


@honours_no_cache
def task_fisher(zoo, task: str, exemplars: int, seed: int, device=None, use_cache: bool = True) -> torch.Tensor:
    """Flat (N,) diagonal Fisher of ``task``'s fine-tuned model, over its training exemplars (cached)."""
    from ..gradients import exemplars_of
    from ..models import channel_stats

    tv = zoo.task_vectors
    path = Spec.of("fisher", zoo.key, {"task": task, "n": exemplars, "seed": seed}, precision="auto").path()

    def compute() -> dict[str, torch.Tensor]:
        dev = device_of(device)
        encoder = zoo.make_encoder().to(dev).eval()
        weights = {k: v.to(dev, torch.float32) for k, v in zoo.finetuned[task].items() if k in set(tv.layout.keys)}
        mean, std = channel_stats(zoo.mean, zoo.std, dev)
        images, _ = exemplars_of(zoo, task, exemplars, seed, dev)  # labels unused: the model's own p(y|x)
        fisher = diagonal_fisher(encoder, weights, zoo.tasks[task].head.to(dev, torch.float32), images, mean, std,
                                 seed=seed)
        return {"fisher": tv.layout.flatten({k: v.cpu() for k, v in fisher.items()}, tv.dtype, f"Fisher of {task}")}

    return cached_tensors(path, compute, use_cache)["fisher"]


@register("fisher", "Fisher Merging", "average of the fine-tuned weights weighted by each model's diagonal Fisher "
          "on its task's exemplars (Matena & Raffel, 2022)",
          params=(EXEMPLARS,), uses_data=True, group="Training-free methods", order=200,
          reference="Matena & Raffel, 2022")
def fisher(zoo, params, task_indices, inputs, progress):
    from . import MergeResult

    tv, names, idx = subset(zoo, task_indices)
    fishers = torch.empty_like(tv.deltas)
    for n, t in enumerate(names):
        progress(n / len(names), f"Fisher of {t} ({params['exemplars']} exemplars)")
        fishers[n] = task_fisher(zoo, t, params["exemplars"], int(params.get("seed", 0)))
    region = plugin_region(tv, params, inputs, idx, task_indices is None)
    return MergeResult(tv.pretrained + masked(fisher_merge(tv.deltas, fishers), region), "fisher", params, region)
