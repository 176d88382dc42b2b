"""Fisher merging (Matena & Raffel, 2022): a parameter-wise weighted average of the fine-tuned models.

F_k = E_x Σ_y p_k(y|x) (∂ log p_k(y|x) / ∂θ)² is the diagonal Fisher of fine-tuned model k (its
own head) on ``exemplars`` training images of its task, with the expectation over the model's
own predictive distribution taken exactly.  θ = θ_pre + Σ_k F_k Δ_k / Σ_k F_k (where no model has
any Fisher mass, the plain average).  With the TATR plug-in the trust-region mask multiplies the
merged task vector.  Each task's Fisher is cached (safetensors).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call, jacrev, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..cache import cache_dir, digest
from ..checkpoints import read_state_dict, save_safetensors
from .fitting import device_of, plugin_region, subset
from .registry import register


def fisher_merge(deltas: torch.Tensor, fishers: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Σ_k F_k Δ_k / Σ_k F_k, entry by entry; entries where Σ_k F_k = 0 take the plain mean of Δ."""
    den = fishers.sum(0)
    merged = (fishers * deltas).sum(0) / den.clamp_min(1e-30)
    return torch.where(den > eps, merged, deltas.mean(0))


def diagonal_fisher(encoder, weights: dict, head: torch.Tensor, images: torch.Tensor, mean, std,
                    chunk: int = 8) -> dict[str, torch.Tensor]:
    """E_x Σ_y p(y|x) g_y(x)², g_y = ∂ log p(y|x)/∂θ, per parameter of ``weights`` (exact over classes)."""
    from ..models import head_logits, normalise

    def log_probs(p, x):
        return F.log_softmax(head_logits(functional_call(encoder, p, (x.unsqueeze(0),), strict=False), head), -1)[0]

    per_sample = vmap(jacrev(log_probs), in_dims=(None, 0))
    total = {k: torch.zeros_like(v) for k, v in weights.items()}
    for start in range(0, len(images), chunk):
        x = normalise(images[start:start + chunk], mean, std)
        with torch.no_grad():
            probs = torch.stack([log_probs(weights, xi).exp() for xi in x])  # (n, C)
        with sdpa_kernel(SDPBackend.MATH):
            jac = per_sample(weights, x)  # k -> (n, C, *shape)
        for k, j in jac.items():
            total[k] += torch.einsum("nc,nc...->...", probs, j.pow(2))
    return {k: v / len(images) for k, v in total.items()}


def task_fisher(zoo, task: str, exemplars: int, seed: int, device=None, use_cache: bool = True) -> torch.Tensor:
    """Flat (N,) diagonal Fisher of ``task``'s fine-tuned model, over its training exemplars (cached)."""
    from ..gradients import exemplar_indices
    from ..models import channel_stats

    tv = zoo.task_vectors
    path = cache_dir("fisher") / f"{zoo.key}-{task}-{digest({'n': exemplars, 'seed': seed})}.safetensors"
    if use_cache and path.exists():
        try:
            return read_state_dict(path)["fisher"]
        except Exception:
            path.unlink(missing_ok=True)
    device = device_of(device)
    encoder = zoo.make_encoder().to(device).eval()
    weights = {k: v.to(device, torch.float32) for k, v in zoo.finetuned[task].items() if k in set(tv.layout.keys)}
    images, labels = zoo.tasks[task].split("train")
    idx = exemplar_indices(len(labels), exemplars, seed, task)
    mean, std = channel_stats(zoo.mean, zoo.std, device)
    fisher = diagonal_fisher(encoder, weights, zoo.tasks[task].head.to(device, torch.float32),
                             images[idx].to(device), mean, std)
    flat = tv.layout.flatten({k: v.cpu() for k, v in fisher.items()}, tv.dtype, f"Fisher of {task}")
    if use_cache:
        save_safetensors({"fisher": flat}, path)
    return flat


@register("fisher", "Fisher Merging", "average of the fine-tuned weights weighted by each model's diagonal Fisher "
          "on its task's exemplars (Matena & Raffel, 2022)",
          default_lam=None, params={"exemplars": 128}, uses_data=True, group="Training-free methods")
def fisher(zoo, params, task_indices, inputs, progress):
    from . import MergeResult

    tv, names, idx = subset(zoo, task_indices)
    fishers = torch.empty_like(tv.deltas)
    for n, t in enumerate(names):
        progress(n / len(names), f"Fisher of {t} ({params['exemplars']} exemplars)")
        fishers[n] = task_fisher(zoo, t, params["exemplars"], int(params.get("seed", 0)))
    merged = fisher_merge(tv.deltas, fishers)
    region = plugin_region(tv, params, inputs, idx, task_indices is None)
    if region is not None and region.keep is not None:
        merged = merged * region.keep
    return MergeResult(tv.pretrained + merged, "fisher", params, region)
