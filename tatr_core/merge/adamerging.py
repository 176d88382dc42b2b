"""AdaMerging (Yang et al., ICLR 2024): merge coefficients learned by entropy minimisation.

θ(λ) = θ_pre + Σ_k λ_k ⊙ Δ_k with one λ_k per task (``granularity="task"``) or one λ_{k,l} per
task and parameter tensor (``"layer"``).  The coefficients start at ``init`` (0.3), are learned
with Adam (``lr`` 1e-3, ``steps`` 500) on the Shannon entropy of the merged model's predictions
on unlabelled test images: each step draws ``batches`` (2) batches of ``batch`` (16) images per task
and sums their mean entropies, as the reference code's loader loop does (it breaks after its
second batch).  The coefficients are clamped to [0, 1] inside the forward pass, as in the
reference (``torch.clamp`` of the raw parameters where the merged weights are built): the
optimiser moves the raw values freely, and a coefficient past a bound stops receiving gradient
from the entropy until Adam's momentum brings it back.  The clamped values are the result.  AdaMerging++ learns them for TIES-processed task vectors (trim to ``density``, keep the
entries that agree with the elected sign).  With the TATR plug-in (τ > 0) the trust-region mask
is applied to the task vectors before learning (Eq. 12): Δ_k ← Δ_k ⊙ m.

The learned coefficients and the entropy curve are cached (JSON, content-addressed) and returned
in ``MergeResult.extras["learned"]``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from .fitting import device_of, fit_spec, masked, plugin_region, subset, unlabelled_batch
from .registry import BATCH, DENSITY, LR, STEPS, Param, register
from .ties import ties_processed

GRANULARITY = Param("granularity", str, "layer", "one coefficient per task, or one per task and parameter tensor",
                    choices=("task", "layer"), label="coefficients",
                    source="layer-wise, AdaMerging's stronger variant (Yang et al., 2024)")
INIT = Param("init", float, 0.3, "initial value of every coefficient", low=0.0, high=1.0, grid=(0.1, 0.2, 0.3, 0.4, 0.5),
             label="initial λ", source="AdaMerging's 0.3, Task Arithmetic's λ (Yang et al., 2024)")
BATCHES = Param("batches", int, 2, "batches of unlabelled images per task per step (their mean entropies summed)",
                low=1, grid=(1, 2, 4), label="batches per task per step",
                source="the AdaMerging reference code's loader loop, which stops after its second batch")
PARAMS = (GRANULARITY, INIT, LR, STEPS, BATCH, BATCHES)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy (nats) of softmax(logits) over the batch."""
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1).mean()


def merged_theta(pretrained: torch.Tensor, deltas: torch.Tensor, coef: torch.Tensor, layout) -> torch.Tensor:
    """θ_pre + Σ_k coef[k, l] Δ_k[l] tensor by tensor (coef is (K, 1) task-wise or (K, L) layer-wise)."""
    parts = []
    for l, (_, sl, _) in enumerate(layout.items()):
        c = coef[:, l if coef.shape[1] > 1 else 0]
        parts.append(pretrained[sl] + c @ deltas[:, sl])
    return torch.cat(parts)


def learn_coefficients(zoo, tv, deltas: torch.Tensor, names: list[str], params: dict, progress, device=None) -> dict:
    """Adam on the summed mean prediction entropy of every task (``batches`` batches each per step);
    the coefficients are clamped to [0, 1] in the forward pass.  Returns the clamped coefficients,
    the raw ones and the entropy curve (mean entropy per batch)."""
    from ..models import channel_stats, head_logits

    device = device_of(device)
    layout = tv.layout
    K, L = deltas.shape[0], len(layout)
    coef = torch.full((K, L if params["granularity"] == "layer" else 1), float(params["init"]), device=device,
                      requires_grad=True)
    encoder = zoo.make_encoder().to(device).eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    pre, D = tv.pretrained.to(device, torch.float32), deltas.to(device, torch.float32)
    mean, std = channel_stats(zoo.mean, zoo.std, device)
    images = {t: zoo.tasks[t].split("test")[0].to(device) for t in names}
    heads = {t: zoo.tasks[t].head.to(device, torch.float32) for t in names}
    generator = torch.Generator().manual_seed(int(params.get("seed", 0)))
    opt = torch.optim.Adam([coef], lr=params["lr"])
    history = []
    batches, batch = int(params.get("batches", BATCHES.default)), params["batch"]
    for step in range(params["steps"]):
        theta = merged_theta(pre, D, coef.clamp(0.0, 1.0), layout)
        weights = layout.unflatten(theta)
        loss = torch.zeros((), device=device)
        for t in names:
            # the task's batches in one forward pass (no batch statistics in a ViT), one mean entropy each
            drawn = [unlabelled_batch(images[t], batch, generator, mean, std) for _ in range(batches)]
            logits = head_logits(functional_call(encoder, weights, (torch.cat(drawn),), strict=False), heads[t])
            loss = loss + sum(entropy(chunk) for chunk in logits.split([len(x) for x in drawn]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()) / (len(names) * batches))
        if step % 10 == 0 or step == params["steps"] - 1:
            progress((step + 1) / params["steps"], f"AdaMerging step {step + 1}/{params['steps']}: "
                                                   f"mean entropy {history[-1]:.3f}")
    return {"tasks": names, "tensors": list(layout.keys), "granularity": params["granularity"],
            "coefficients": coef.detach().clamp(0.0, 1.0).cpu().tolist(),
            "raw_coefficients": coef.detach().cpu().tolist(), "entropy": history}


def is_learned(record) -> bool:
    """Whether a cached record has the shape of :func:`learn_coefficients`' result."""
    return (isinstance(record, dict) and isinstance(record.get("coefficients"), list) and bool(record["coefficients"])
            and all(isinstance(row, list) for row in record["coefficients"]) and isinstance(record.get("entropy"), list))


def fit(zoo, params: dict, task_indices, inputs: dict, progress, *, plus: bool, method: str):
    from . import MergeResult

    tv, names, idx = subset(zoo, task_indices)
    deltas = ties_processed(tv.deltas, params["density"]) if plus else tv.deltas
    region = plugin_region(tv, params, inputs, idx, task_indices is None)
    deltas = masked(deltas, region)  # Eq. 12: the mask before the coefficients are learned
    spec = fit_spec(zoo, method, {"params": params, "tasks": names})
    learned = spec.load(is_learned)
    if learned is None:
        learned = learn_coefficients(zoo, tv, deltas, names, params, progress)
        spec.store(learned)
    coef = torch.tensor(learned["coefficients"], dtype=torch.float32, device=tv.pretrained.device)
    theta = merged_theta(tv.pretrained.float(), deltas.float(), coef, tv.layout).to(tv.dtype)
    return MergeResult(theta, method, params, region, extras={"learned": learned})


@register("adamerging", "AdaMerging", "coefficients per task (or per task and layer) learned by minimising the "
          "prediction entropy on unlabelled test images (Yang et al., 2024)",
          params=PARAMS, uses_data=True, order=300, reference="Yang et al., 2024",
          rows=(("TW AdaMerging", {"granularity": "task"}), ("LW AdaMerging", {"granularity": "layer"})))
def adamerging(zoo, params, task_indices, inputs, progress):
    return fit(zoo, params, task_indices, inputs, progress, plus=False, method="adamerging")


@register("adamerging++", "AdaMerging++", "AdaMerging on TIES-processed task vectors (trimmed, sign-elected)",
          params=(*PARAMS, DENSITY), uses_data=True, order=310, reference="Yang et al., 2024",
          rows=(("LW AdaMerging++", {"granularity": "layer"}),))
def adamerging_plus(zoo, params, task_indices, inputs, progress):
    return fit(zoo, params, task_indices, inputs, progress, plus=True, method="adamerging++")
