"""Representation Surgery (Yang et al., ICML 2024) on top of Task Arithmetic, or TATR with the plug-in.

The merged encoder's output representation z of task t's images is corrected by a light per-task
module, ẑ = z − W_up ReLU(W_down z) (rank ``rank``), trained on unlabelled test images so that ẑ
comes close (L1) to the individual model's representation of the same images; at evaluation,
task t's features pass through its module before the head.  With the TATR plug-in (τ > 0) the
underlying merge is TATR (Eq. 13).  The modules are cached (safetensors) and returned in
``MergeResult.extras["feature_maps"]`` with the L1 gap before and after training.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..cache import load_tensors, store_tensors
from .fitting import device_of, fit_spec, plugin_region, subset
from .registry import BATCH, LAM, LR, STEPS, Param, register

RANK = Param("rank", int, 16, "rank of each task's low-rank module", low=1, high=4096, grid=(2, 4, 8, 16, 32, 64),
             label="rank of the per-task module", source="Surgery's rank 16 (Yang et al., 2024)")


class SurgeryModule(torch.nn.Module):
    """ẑ = z − up(ReLU(down(z))): starts as the identity (``up`` is zero)."""

    def __init__(self, dim: int, rank: int, generator: torch.Generator):
        super().__init__()
        self.down = torch.nn.Linear(dim, rank, bias=False)
        self.up = torch.nn.Linear(rank, dim, bias=False)
        with torch.no_grad():
            self.down.weight.copy_(torch.randn(rank, dim, generator=generator) / dim ** 0.5)
            self.up.weight.zero_()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z - self.up(F.relu(self.down(z)))


@torch.no_grad()
def representations(zoo, params_flat: torch.Tensor | dict | None, images: torch.Tensor, device, batch: int = 512,
                    encoder: torch.nn.Module | None = None):
    """Output representations (before the head's normalisation) of uint8 ``images``; pass ``encoder``
    (on ``device``) to reuse one module across calls."""
    from ..models import channel_stats, normalise

    encoder = encoder if encoder is not None else zoo.make_encoder().to(device).eval()
    mean, std = channel_stats(zoo.mean, zoo.std, device)
    if isinstance(params_flat, torch.Tensor):
        params_flat = zoo.task_vectors.layout.unflatten(params_flat)
    weights = {k: v.to(device, torch.float32) for k, v in (params_flat or {}).items() if v.is_floating_point()}
    out = []
    for start in range(0, len(images), batch):
        x = normalise(images[start:start + batch].to(device), mean, std)
        out.append(functional_call(encoder, weights, (x,), strict=False).float())
    return torch.cat(out)


def train_modules(zoo, theta: torch.Tensor, names: list[str], params: dict, progress, device=None):
    device = device_of(device)
    generator = torch.Generator().manual_seed(int(params.get("seed", 0)))
    encoder = zoo.make_encoder().to(device).eval()  # one module; merged and individual weights swapped in
    modules, report = {}, {"l1_before": {}, "l1_after": {}, "loss": {}}
    for n, t in enumerate(names):
        images = zoo.tasks[t].split("test")[0].to()  # a mapped split: decoded once, on every core
        progress(n / len(names), f"Surgery: representations of {t}")
        merged = representations(zoo, theta, images, device, encoder=encoder)
        target = representations(zoo, zoo.finetuned[t], images, device, encoder=encoder)
        module = SurgeryModule(merged.shape[1], params["rank"], generator).to(device)
        opt = torch.optim.Adam(module.parameters(), lr=params["lr"])
        history = []
        for step in range(params["steps"]):
            pick = torch.randperm(len(images), generator=generator)[:params["batch"]].to(device)
            loss = F.l1_loss(module(merged[pick]), target[pick])
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(float(loss.detach()))
        with torch.no_grad():
            report["l1_before"][t] = float(F.l1_loss(merged, target))
            report["l1_after"][t] = float(F.l1_loss(module(merged), target))
        report["loss"][t] = history
        modules[t] = module.eval()
        progress((n + 1) / len(names), f"Surgery: {t}: L1 gap {report['l1_before'][t]:.4f} → {report['l1_after'][t]:.4f}")
    return modules, report


@register("surgery", "Representation Surgery", "Task Arithmetic (TATR with τ > 0) plus a low-rank per-task module "
          "that pulls the merged representation toward the individual model's (Yang et al., 2024)",
          params=(LAM, RANK, LR, STEPS, BATCH), uses_data=True, order=320, reference="Yang et al., 2024")
def surgery(zoo, params, task_indices, inputs, progress):
    from . import MergeResult, merge

    tv, names, idx = subset(zoo, task_indices)
    region = plugin_region(tv, params, inputs, idx, task_indices is None)
    theta = merge(tv, "task_arithmetic", lam=params["lam"], region=region).theta  # TATR when region is set
    payload = {"params": params, "tasks": names}
    report_spec = fit_spec(zoo, "surgery", payload)
    weights_path = fit_spec(zoo, "surgery", payload, tensors=True).path()
    device = device_of()
    report = report_spec.load(lambda r: isinstance(r, dict) and {"l1_before", "l1_after"} <= set(r))
    modules = {}
    sd = load_tensors(weights_path) if report is not None else None
    if sd is not None:
        try:
            for t in names:
                m = SurgeryModule(sd[f"{t}.down.weight"].shape[1], params["rank"], torch.Generator())
                m.load_state_dict({"down.weight": sd[f"{t}.down.weight"], "up.weight": sd[f"{t}.up.weight"]})
                modules[t] = m.to(device).eval()
        except (KeyError, RuntimeError):  # modules of another shape: train again
            modules = {}
    if not modules:
        modules, report = train_modules(zoo, theta, names, params, progress, device)
        store_tensors(weights_path, {f"{t}.{k}": v.detach().cpu() for t, m in modules.items()
                                     for k, v in m.state_dict().items()})
        report_spec.store(report)
    maps = {t: m for t, m in modules.items()}
    return MergeResult(theta, "surgery", params, region, extras={"feature_maps": maps, "surgery": report})
