"""Issue 27's study: what makes Task Arithmetic work on the mini zoo.

    .venv/bin/python bench/disentangle_study.py --variant base --variant attn ...   [--pretrain-steps 500]

Each variant fine-tunes the 8 tasks of the ``mini`` recipe from one pretrained CLIP (built with the
recipe's own ``_pretrain`` and cached in ``--work`` per pretraining setting, so variants of the
fine-tuning reuse it), then prints, on the test split:

* zero-shot and individual accuracy (mean over tasks) and the gap between them;
* Task Arithmetic with λ chosen on the validation split, and the share of the gap it recovers;
* the weight-disentanglement error ξ(α₁, α₂) of Ortiz-Jiménez et al. (2023), computed by
  the definition in :mod:`tatr_core.analysis.disentanglement`, averaged over α ∈ {0.25, …, 1}²
  and over three task pairs (``mean ξ``; 0 = perfectly disentangled, 2 = every prediction changed);
* the task vectors' mean pairwise cosine and their norm relative to θ_pre.

Variants (``--variant``; any number): ``base`` (the recipe's fine-tuning: all parameters, AdamW),
``attn`` (only the attention blocks' weights move, as Jin et al. 2025 fine-tune), ``mlp``, ``blocks``
(every transformer block, embeddings, norms and projection frozen), ``linear`` (fine-tuning the
first-order Taylor expansion of the image tower at θ_pre, Ortiz-Jiménez et al. 2023; its task vectors
are then evaluated by the ordinary, non-linear model as every method here is), ``attn-linear``;
each optionally with ``@lr=…`` and ``@steps=…`` (``attn@lr=1e-3``).  Every number is computed here.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tatr_core.checkpoints import read_state_dict, save_safetensors  # noqa: E402
from tatr_core.data.mini import TASKS  # noqa: E402
from tatr_core.models import create_clip, head_logits, tokenizer, zero_shot_head  # noqa: E402
from tatr_core.zoo import mini  # noqa: E402

PAIRS = (("mnist", "textures"), ("letters", "colours"), ("digits", "shapes"))
ALPHAS = (0.25, 0.5, 0.75, 1.0)


def trainable(name: str, which: str) -> bool:
    if which == "all":
        return True
    if which == "attn":
        return ".attn." in name and name.endswith("weight")
    if which == "mlp":
        return ".mlp." in name
    if which == "blocks":
        return "resblocks" in name
    raise ValueError(which)


def finetune(visual, head, images, labels, recipe, seed: int, which: str, linear: bool, pretrained: dict) -> dict:
    """The fine-tuned image tower's state (the recipe's loss and schedule; only ``which`` parameters move)."""
    params = {k: v.detach().clone().requires_grad_(trainable(k, which)) for k, v in pretrained.items()
              if v.is_floating_point()}
    moving = [p for p in params.values() if p.requires_grad]
    base = {k: v.detach() for k, v in params.items()}
    opt = torch.optim.AdamW(moving, lr=recipe.finetune_lr, weight_decay=recipe.weight_decay)
    g = torch.Generator().manual_seed(seed)
    steps, warmup = recipe.finetune_steps, max(1, recipe.finetune_steps // 10)
    visual.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = recipe.finetune_lr * mini._cosine(step, steps, warmup)
        idx = torch.randint(len(labels), (recipe.finetune_batch,), generator=g)
        x = mini._normalise(images[idx])
        if linear:
            tangent = {k: params[k] - base[k] for k in params}
            with sdpa_kernel(SDPBackend.MATH):  # the fused CPU attention has no forward-mode derivative
                out, dout = jvp(lambda p: functional_call(visual, p, (x,)), (base,), (tangent,))
            z = out + dout
        else:
            z = functional_call(visual, params, (x,))
        loss = F.cross_entropy(head_logits(z, head), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    visual.eval()
    return {k: v.detach() for k, v in params.items()}


@torch.inference_mode()
def predict(visual, state: dict, head, images) -> torch.Tensor:
    out = []
    for start in range(0, len(images), 1000):
        z = functional_call(visual, state, (mini._normalise(images[start:start + 1000]),))
        out.append(head_logits(z, head).argmax(1))
    return torch.cat(out)


def accuracy(visual, state, head, split) -> float:
    images, labels = split
    return float((predict(visual, state, head, images) == labels).float().mean())


def pretrained_clip(recipe, data, work: Path):
    key = f"pre-{recipe.pretrain_steps}-{recipe.pretrain_lr}-{recipe.pretrain_per_task}-{recipe.seed}"
    path = work / f"{key}.safetensors"
    torch.manual_seed(recipe.seed)
    model = create_clip(recipe.arch)
    if path.exists():
        model.load_state_dict(read_state_dict(path))
    else:
        t0 = time.perf_counter()
        mini._pretrain(model, tokenizer(recipe.arch), data, recipe, lambda f, m: None)
        save_safetensors(model.state_dict(), str(path))
        print(f"pretrained {key} in {time.perf_counter() - t0:.0f} s", flush=True)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", default=[])
    ap.add_argument("--pretrain-steps", type=int, default=None)
    ap.add_argument("--work", default="/tmp/disentangle_study")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    recipe = mini.PRESETS["mini"]
    if args.pretrain_steps:
        recipe = dataclasses.replace(recipe, pretrain_steps=args.pretrain_steps)
    data = mini._generate_data(recipe, lambda f, m: None, 1.0)
    model = pretrained_clip(recipe, data, work)
    tok = tokenizer(recipe.arch)
    with torch.no_grad():
        heads = {t: zero_shot_head(model, tok, TASKS[t][0].classnames, TASKS[t][0].templates) for t in recipe.tasks}
    visual = model.visual
    theta0 = {k: v.detach().clone() for k, v in visual.state_dict().items() if v.is_floating_point()}
    names = recipe.tasks
    zs = {t: accuracy(visual, theta0, heads[t], data[t]["test"]) for t in names}
    for variant in args.variant or ["base"]:
        kind, *opts = variant.split("@")
        over = {k: type(getattr(recipe, k))(v) for k, v in (o.split("=") for o in opts)}
        r = dataclasses.replace(recipe, **over)
        which = {"base": "all", "linear": "all", "attn-linear": "attn"}.get(kind, kind)
        t0 = time.perf_counter()
        tvs = {}
        for i, t in enumerate(names):
            state = finetune(visual, heads[t], *data[t]["train"], r, r.seed + 1000 + i, which, "linear" in kind, theta0)
            tvs[t] = {k: state[k] - theta0[k] for k in theta0}
        ft_s = time.perf_counter() - t0
        ind = {t: accuracy(visual, {k: theta0[k] + tvs[t][k] for k in theta0}, heads[t], data[t]["test"]) for t in names}

        def merged(weights: dict) -> dict:
            return {k: theta0[k] + sum(w * tvs[t][k] for t, w in weights.items()) for k in theta0}

        best = max((sum(accuracy(visual, merged({t: lam for t in names}), heads[s], data[s]["val"]) for s in names), lam)
                   for lam in [x / 10 for x in range(1, 11)])
        lam = best[1]
        ta_state = merged({t: lam for t in names})
        ta = {t: accuracy(visual, ta_state, heads[t], data[t]["test"]) for t in names}
        # ξ(α1, α2) = Σ_t E_{x~μ_t} 1[f(x; θ0 + α_t τ_t) ≠ f(x; θ0 + α1 τ1 + α2 τ2)], on 200 test images per task
        xis = []
        for a, b in PAIRS:
            xa = data[a]["test"][0][:200]
            xb = data[b]["test"][0][:200]
            for a1, a2 in itertools.product(ALPHAS, ALPHAS):
                both = merged({a: a1, b: a2})
                e = (predict(visual, merged({a: a1}), heads[a], xa) != predict(visual, both, heads[a], xa)).float().mean()
                e += (predict(visual, merged({b: a2}), heads[b], xb) != predict(visual, both, heads[b], xb)).float().mean()
                xis.append(float(e))
        flat = torch.stack([torch.cat([v.flatten() for v in tvs[t].values()]) for t in names]).double()
        unit = F.normalize(flat, dim=1)
        cos = (unit @ unit.T)[~torch.eye(len(names), dtype=bool)].mean()
        rel = flat.norm(dim=1).mean() / torch.cat([v.flatten() for v in theta0.values()]).double().norm()
        m = lambda d: 100 * sum(d.values()) / len(d)  # noqa: E731
        gap = m(ind) - m(zs)
        print(f"| {r.pretrain_steps} | {variant} | {m(zs):.1f} | {m(ind):.1f} | {m(ta):.1f} (λ {lam:g}) | "
              f"**{100 * (m(ta) - m(zs)) / gap:.0f}%** | {sum(xis) / len(xis):.3f} | {float(cos):.3f} | "
              f"{100 * float(rel):.1f}% | {ft_s:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
