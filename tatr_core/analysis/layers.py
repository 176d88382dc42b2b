"""Per-layer sensitivity (Figure 4) and where the trust region cuts.

* ``omega``: mean Ω (any sensitivity variant) over each parameter tensor;
* ``per_task``: for each task j, the mean of Σ_{i≠j} |G_j| ⊙ |Δ_i| = G_j ⊙ (Σ_i |Δ_i| − |Δ_j|)
  over each tensor (the paper's Figure 4: how sensitive task j is to the other task vectors);
* ``excluded``: the fraction of each tensor outside the trust region at ``tau``;
* ``histogram``: the distribution of Ω over all N dimensions (log10 bins of the positive
  values, counts of the others) and the threshold of the top-τ exclusion (Eq. 9).

Tensors are grouped into blocks — ``embed`` (conv1, class and positional embeddings, ln_pre),
``block i`` (transformer.resblocks.i.*) and ``head`` (ln_post, proj) — with entry-weighted means.
"""
from __future__ import annotations

import torch

from ..gradients import compute_task_gradients
from ..keys import Spec
from ..merge import compute_trust_region
from ..trust_region import SENSITIVITIES, check_tau, sensitivity, sensitivity_spec
from ..zoo import Progress, Zoo, no_progress
from .registry import Context, has_keys, register, run


def block_depth(block: str) -> tuple[int, int]:
    """Where a block of :func:`block_of` sits in the encoder: the embeddings, the blocks by number, the head."""
    if block == "embed":
        return (0, 0)
    if block.startswith("block "):
        return (1, int(block.split()[1]))
    return (2, 0)


def block_of(key: str) -> str:
    parts = key.split(".")
    if parts[0] == "transformer" and len(parts) > 2 and parts[1] == "resblocks":
        return f"block {parts[2]}"
    if parts[0] in ("ln_post", "proj"):
        return "head"
    return "embed"


def omega_histogram(omega: torch.Tensor, threshold: float | None, bins: int = 80) -> dict:
    """Counts of log10 Ω in ``bins`` equal bins over the positive entries; zeros and negatives counted apart.

    ``threshold`` is the smallest excluded Ω (None when nothing is excluded).
    """
    omega = omega.reshape(-1)
    positive = omega[omega > 0].double().log10()
    edges: list[float] = []
    counts: list[int] = []
    if positive.numel():
        lo, hi = float(positive.min()), float(positive.max())
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        counts = torch.histc(positive, bins=bins, min=lo, max=hi).long().tolist()
        edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64).tolist()
    return {"log10_edges": edges, "counts": counts, "zeros": int((omega == 0).sum()),
            "negative": int((omega < 0).sum()), "threshold": threshold, "n": omega.numel()}


def layers_spec(zoo: Zoo, variant: str = "gradient", tau: float = 0.01, exemplars: int = 128, seed: int = 0) -> Spec:
    """The spec of :func:`layer_sensitivity`."""
    sensitivity_spec(variant)
    return Spec.of("layers", zoo.key, {"params": {"variant": variant, "tau": check_tau(tau), "exemplars": int(exemplars),
                                                  "seed": int(seed)}})


def layer_sensitivity(zoo: Zoo, variant: str = "gradient", tau: float = 0.01, exemplars: int = 128, seed: int = 0,
                      progress: Progress = no_progress, use_cache: bool = True) -> dict:
    """Figure 4's record: Ω and each task's sensitivity per tensor and block, what τ excludes, Ω's histogram."""
    return run(zoo, layers_spec(zoo, variant, tau, exemplars, seed), progress=progress, use_cache=use_cache)


@register("layers", "per-layer sensitivity", has_keys("tasks", "tensors", "per_task", "histogram", "block_omega"),
          lambda args: "per-task gradients and Ω")
def _layers(zoo: Zoo, args: dict, ctx: Context) -> dict:
    params = args["params"]
    variant, tau, exemplars, seed, progress = (params["variant"], params["tau"], params["exemplars"], params["seed"],
                                               ctx.progress)
    tv = zoo.task_vectors
    g = compute_task_gradients(zoo, exemplars, seed, progress=progress)
    needs = SENSITIVITIES[variant].needs
    omega = sensitivity(tv.deltas, variant, grads=g.abs_mean if needs == "grads" else None,
                        signed_grads=g.mean if needs == "signed_grads" else None)
    region = compute_trust_region(tv, tau, variant, grads=g.abs_mean, signed_grads=g.mean)
    if region.keep is None:
        threshold = None
    elif SENSITIVITIES[variant].nonnegative:
        threshold = omega[~region.keep].min().item()
    else:  # the signed variants keep Ω > 0: the cut is at zero (Appendix C.4)
        threshold = 0.0
    hist = omega_histogram(omega, threshold)
    abs_sum = tv.deltas.abs().sum(0)
    keys, sizes, blocks = [], [], []
    mean_omega, excluded, per_task = [], [], {t: [] for t in zoo.task_names}
    for key_, sl, shape in tv.layout.items():
        keys.append(key_)
        sizes.append(shape.numel())
        blocks.append(block_of(key_))
        mean_omega.append(float(omega[sl].double().mean()))
        excluded.append(0.0 if region.keep is None else float((~region.keep[sl]).double().mean()))
        for j, t in enumerate(zoo.task_names):
            others = abs_sum[sl] - tv.deltas[j, sl].abs()
            per_task[t].append(float((g.abs_mean[j, sl].to(others.device) * others).double().mean()))

    def by_block(values: list[float]) -> dict[str, float]:
        out: dict[str, list[float]] = {}
        for b, v, n in zip(blocks, values, sizes):
            acc = out.setdefault(b, [0.0, 0])
            acc[0] += v * n
            acc[1] += n
        return {b: out[b][0] / out[b][1] for b in sorted(out, key=block_depth)}  # by depth, not by key order

    record = {
        "params": params, "tasks": zoo.task_names, "tensors": keys, "sizes": sizes, "blocks": blocks,
        "omega": mean_omega, "excluded": excluded, "per_task": per_task,
        "block_omega": by_block(mean_omega), "block_excluded": by_block(excluded),
        "block_per_task": {t: by_block(v) for t, v in per_task.items()},
        "excluded_total": region.excluded, "N": tv.N, "histogram": hist,
    }
    return record
