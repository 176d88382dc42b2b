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
* the task vectors' mean pairwise cosine and their norm relative to θ_pre;
* each task alone at α = 0.3 (θ_pre + 0.3 τ_t on task t), as a share of the gap: what Task Arithmetic at
  λ = 0.3 would recover if the tasks did not interfere at all.

``--merge-tasks a,b,c,d``: fine-tune and merge a subset only (same pretraining and seeds), to compare
subsets whose inputs differ more or less.

Variants (``--variant``; any number): ``shipped`` (the shipped build's fine-tuned models, no fine-tuning
here; only with the ``mini`` recipe as it is), ``base`` (the recipe's fine-tuning: all parameters, AdamW),
``attn`` (only the attention blocks' weights move, as Jin et al. 2025 fine-tune), ``mlp``, ``blocks``
(every transformer block, embeddings, norms and projection frozen) (the recipe's ``finetune_params``), ``linear`` (fine-tuning the
first-order Taylor expansion of the image tower at θ_pre, Ortiz-Jiménez et al. 2023, the recipe's
``finetune_linear``; its task vectors
are then evaluated by the ordinary, non-linear model as every method here is), ``attn-linear``;
each optionally with recipe fields ``@finetune_lr=…``, ``@finetune_steps=…`` (``attn@finetune_lr=1e-3``).
``--vision width=192 layers=6``: a wider or deeper image tower than the recipe's (an open_clip JSON config
written into ``--work`` and registered, named after the change).  Every number is computed here.
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
from torch.func import functional_call

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tatr_core.checkpoints import read_state_dict, save_safetensors  # noqa: E402
from tatr_core.data.mini import TASKS  # noqa: E402
from tatr_core.models import create_clip, head_logits, tokenizer, zero_shot_head  # noqa: E402
from tatr_core.zoo import mini  # noqa: E402

PAIRS = (("mnist", "textures"), ("letters", "colours"), ("digits", "shapes"))
ALPHAS = (0.25, 0.5, 0.75, 1.0)


def finetune(visual, head, images, labels, recipe, seed: int, pretrained: dict) -> dict:
    """The fine-tuned image tower's state: the zoo build's own fine-tuning (``mini._finetune``), from θ_pre."""
    visual.load_state_dict(pretrained)
    mini._finetune(visual, head, images, labels, recipe, seed, lambda f, m: None)
    return {k: v.detach().clone() for k, v in visual.state_dict().items()}


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
    from tatr_core.cache import digest

    fields = ("arch", "tasks", "sizes", "seed", "pretrain_steps", "pretrain_batch", "pretrain_lr", "pretrain_per_task",
              "class_caption_rate", "alias_caption_rate", "weight_decay")
    key = f"pre-{recipe.pretrain_steps}-{digest({f: getattr(recipe, f) for f in fields})}"
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


def study_arch(arch: str, changes: list[str], work: Path) -> str:
    """An open_clip config: ``arch``'s with the image tower's ``changes`` (``width=192``), registered."""
    import json

    from tatr_core.models import open_clip_module

    open_clip = open_clip_module()
    config = json.loads(json.dumps(open_clip.get_model_config(arch)))
    config["vision_cfg"].update({k: json.loads(v) for k, v in (c.split("=", 1) for c in changes)})
    name = f"{arch}-" + "-".join(c.replace("=", "") for c in changes)
    (work / f"{name}.json").write_text(json.dumps(config, indent=1))
    open_clip.add_model_config(work / f"{name}.json")
    return name


def as_zoo(key: str, recipe, theta0: dict, tvs: dict, heads: dict, data: dict):
    """The variant's models as a zoo of the project (so that its own methods run on them)."""
    from tatr_core.models import OPENAI_MEAN, OPENAI_STD
    from tatr_core.zoo.base import Task, Zoo

    tasks = {t: Task(t, list(TASKS[t][0].classnames), heads[t], data[t], TASKS[t][0].source) for t in recipe.tasks}
    finetuned = {t: {k: theta0[k] + tvs[t][k] for k in theta0} for t in recipe.tasks}
    return Zoo(key, recipe.arch, theta0, finetuned, tasks, OPENAI_MEAN, OPENAI_STD, key, {})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", default=[])
    ap.add_argument("--pretrain-steps", type=int, default=None)
    ap.add_argument("--set", action="append", default=[], help="a recipe field for every variant, name=JSON value")
    ap.add_argument("--work", default="/tmp/disentangle_study")
    ap.add_argument("--merge-tasks", default="",
                    help="fine-tune and merge only these tasks (comma-separated; the pretraining keeps every task); "
                         "ξ on consecutive pairs of them")
    ap.add_argument("--vision", nargs="*", default=[], help="image-tower config changes, name=JSON value")
    ap.add_argument("--adamerging", action="append", default=[], choices=("task", "layer"),
                    help="also task- or layer-wise AdaMerging (the project's own, 500 steps each, on a zoo made of "
                         "the variant's models; results cached under $TATR_CACHE)")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    recipe = mini.PRESETS["mini"]
    if args.pretrain_steps:
        recipe = dataclasses.replace(recipe, pretrain_steps=args.pretrain_steps)
    if args.vision:
        recipe = dataclasses.replace(recipe, arch=study_arch(recipe.arch, args.vision, work))
    if args.set:
        import json

        recipe = dataclasses.replace(recipe, **{k: json.loads(v) for k, v in (a.split("=", 1) for a in args.set)})
    from tatr_core.cache import digest

    images = work / f"data-{digest({'tasks': recipe.tasks, 'sizes': recipe.sizes, 'seed': recipe.seed})}"
    images.mkdir(parents=True, exist_ok=True)  # the task images, as a build writes them (kept for the next run)
    data = mini._generate_data(recipe, images, lambda f, m: None, 1.0)
    model = pretrained_clip(recipe, data, work)
    tok = tokenizer(recipe.arch)
    with torch.no_grad():
        heads = {t: zero_shot_head(model, tok, TASKS[t][0].classnames, TASKS[t][0].templates,
                                   recipe.head_scale_of(model)) for t in recipe.tasks}
    visual = model.visual
    theta0 = {k: v.detach().clone() for k, v in visual.state_dict().items() if v.is_floating_point()}
    names = tuple(args.merge_tasks.split(",")) if args.merge_tasks else recipe.tasks
    pairs = PAIRS if not args.merge_tasks else tuple(zip(names[::2], names[1::2]))
    zs = {t: accuracy(visual, theta0, heads[t], data[t]["test"]) for t in names}
    for variant in args.variant or ["base"]:
        kind, *opts = variant.split("@")
        over = {k: type(getattr(recipe, k))(v) for k, v in (o.split("=") for o in opts)}
        r = dataclasses.replace(recipe, **over)
        r = dataclasses.replace(r, finetune_params={"base": "all", "shipped": "all", "linear": "all",
                                                    "attn-linear": "attn"}.get(kind, kind),
                                finetune_linear="linear" in kind)
        t0 = time.perf_counter()
        tvs = {}
        if kind == "shipped":  # the shipped build's fine-tuned towers (the recipe's own θ_pre: the same bits)
            shipped = mini.load("mini")
            for t in names:
                tvs[t] = {k: shipped.finetuned[t][k] - theta0[k] for k in theta0}
        for t in names if kind != "shipped" else ():
            state = finetune(visual, heads[t], *data[t]["train"], r, r.seed + 1000 + recipe.tasks.index(t), theta0)
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
        for a, b in pairs:
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
        # each task alone at α = 0.3: what Task Arithmetic at λ = 0.3 would reach with no interference at all
        alone = {t: accuracy(visual, merged({t: 0.3}), heads[t], data[t]["test"]) for t in names}
        print(f"| {r.pretrain_steps} | {variant} | {m(zs):.1f} | {m(ind):.1f} | {m(ta):.1f} (λ {lam:g}) | "
              f"**{100 * (m(ta) - m(zs)) / gap:.0f}%** | {sum(xis) / len(xis):.3f} | {float(cos):.3f} | "
              f"{100 * float(rel):.1f}% | {100 * (m(alone) - m(zs)) / gap:.0f}% | {ft_s:.0f} s |", flush=True)
        print("   zero-shot / individual per task: " + ", ".join(f"{t} {100 * zs[t]:.0f}/{100 * ind[t]:.0f}" for t in names),
              flush=True)
        for granularity in args.adamerging:
            from tatr_core.runs import evaluate_method

            from tatr_core.cache import digest

            zoo = as_zoo(f"study-{digest(r.as_dict())}", recipe, theta0, tvs, heads, data)
            acc = 100 * evaluate_method(zoo, "adamerging", granularity=granularity)["average_accuracy"]
            print(f"   {granularity}-wise AdaMerging: {acc:.1f} (Task Arithmetic {m(ta):.1f})", flush=True)


if __name__ == "__main__":
    main()
