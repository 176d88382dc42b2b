"""RegMean (Jin et al., ICLR 2023): closed-form merge of every linear layer from its input Gram matrices.

For a linear map y = W x with inputs X_k of model k (its task's exemplars, every token),
G_k = X_kᵀ X_k and, with the off-diagonal scaling α, G̃_k = α G_k + (1 − α) diag(G_k);
W* = (Σ_k W_k G̃_k)(Σ_k G̃_k)⁻¹ minimises Σ_k ‖X_k W*ᵀ − X_k W_kᵀ‖² when α = 1.  Linear maps in
the ViT: attention in-projection (input: ln_1 output), attention out-projection (input: the
attention context), MLP c_fc and c_proj, and the final projection (input: the pooled ln_post
output).  All other parameters (biases, norms, embeddings, conv1) are averaged.  With the TATR
plug-in the trust-region mask multiplies the merged task vector.  Grams are cached per task.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..cache import cached_tensors, honours_no_cache
from ..keys import Spec
from ..gradients import exemplars_of
from ..models import channel_stats, normalise
from .fitting import device_of, fit_spec, masked, plugin_region, subset
from .registry import EXEMPLARS, Param, register

ALPHA = Param("alpha", float, 0.9, "off-diagonal scaling of the Gram matrices (1: exact least squares; 0: diagonal)",
              low=0.0, high=1.0, grid=(0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0), label="α: off-diagonal scaling of the Grams",
              source="RegMean's α = 0.9 for vision (Jin et al., 2023)")


def regmean_linear(grams: list[torch.Tensor], weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """W* (out × in) from per-model Grams (in × in) and weights W_k (out × in)."""
    scaled = [alpha * g + (1 - alpha) * torch.diag(torch.diagonal(g)) for g in grams]
    lhs = sum(scaled)
    rhs = sum(g @ w.T for g, w in zip(scaled, weights))  # (in, out)
    try:
        return torch.linalg.solve(lhs, rhs).T
    except RuntimeError:  # singular (inputs that never vary): the minimum-norm least-squares solution
        return torch.linalg.lstsq(lhs, rhs).solution.T


def _context(attn: torch.nn.MultiheadAttention, q: torch.Tensor) -> torch.Tensor:
    """The input of ``attn``'s out-projection: the attention context (batch first)."""
    d = attn.embed_dim
    x = q.transpose(0, 1) if attn.batch_first else q
    ctx, _ = F.multi_head_attention_forward(
        x, x, x, d, attn.num_heads, attn.in_proj_weight, attn.in_proj_bias, None, None, False, 0.0,
        torch.eye(d, dtype=q.dtype, device=q.device), torch.zeros(d, dtype=q.dtype, device=q.device),
        training=False, need_weights=False)
    return ctx.transpose(0, 1) if attn.batch_first else ctx


def _gram_hooks(root: torch.nn.Module, weights: dict, add) -> list:
    """Hooks on ``root``'s linear maps (named as in ``weights``) that hand each one's input to ``add``."""
    hooks = []
    for name, module in root.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, torch.nn.MultiheadAttention) and f"{prefix}in_proj_weight" in weights:
            def pre(mod, args, kwargs, prefix=prefix):
                q = args[0]
                add(f"{prefix}in_proj_weight", q)
                add(f"{prefix}out_proj.weight", _context(mod, q))
            hooks.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        elif isinstance(module, torch.nn.Linear) and not name.endswith("attn.out_proj") and f"{prefix}weight" in weights:
            hooks.append(module.register_forward_pre_hook(lambda mod, args, key=f"{prefix}weight": add(key, args[0])))
    return hooks


class _Grams(dict):
    """{weight key: Σ x xᵀ} accumulated in float64 over every token the hooks see."""

    def add(self, key: str, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).double()
        self[key] = self.get(key, 0) + x.T @ x


@torch.no_grad()
def layer_grams(encoder, weights: dict, images: torch.Tensor, mean, std, chunk: int = 64) -> dict[str, torch.Tensor]:
    """{weight key: Σ x xᵀ over every token of every image} for the encoder's linear maps (float64)."""
    grams = _Grams()
    add = grams.add
    hooks = _gram_hooks(encoder, weights, add)
    pooled_proj = ("proj" in weights and getattr(encoder, "attn_pool", None) is None
                   and getattr(encoder, "pool_type", "tok") == "tok")
    if pooled_proj:
        def post(mod, args, out):
            add("proj", out[:, 0] if out.dim() == 3 else out)
        hooks.append(encoder.ln_post.register_forward_hook(post))
    try:
        for start in range(0, len(images), chunk):
            functional_call(encoder, weights, (normalise(images[start:start + chunk], mean, std),), strict=False)
    finally:
        for h in hooks:
            h.remove()
    return dict(grams)


@torch.no_grad()
def block_grams(block: torch.nn.Module, weights: dict, inputs: list[torch.Tensor],
                grams: bool = True) -> tuple[dict, list[torch.Tensor]]:
    """A transformer block run with ``weights`` on every batch of ``inputs`` (batch first): the Grams of its
    linear maps' inputs (none with ``grams=False``), and its outputs."""
    collected = _Grams()
    hooks = _gram_hooks(block, weights, collected.add) if grams else []
    try:
        outputs = [functional_call(block, weights, (x,), strict=False) for x in inputs]
    finally:
        for h in hooks:
            h.remove()
    return dict(collected), outputs


@honours_no_cache
def task_grams(zoo, task: str, exemplars: int, seed: int, device=None, use_cache: bool = True) -> dict[str, torch.Tensor]:
    """{weight key: Gram of its inputs} of ``task``'s fine-tuned model over its training exemplars (cached)."""
    path = Spec.of("regmean", zoo.key, {"task": task, "n": exemplars, "seed": seed}, precision="auto").path()

    def compute() -> dict[str, torch.Tensor]:
        dev = device_of(device)
        encoder = zoo.make_encoder().to(dev).eval()
        weights = {k: v.to(dev, torch.float32) for k, v in zoo.finetuned[task].items() if v.is_floating_point()}
        mean, std = channel_stats(zoo.mean, zoo.std, dev)
        images, _ = exemplars_of(zoo, task, exemplars, seed, dev)
        return {k: v.cpu() for k, v in layer_grams(encoder, weights, images, mean, std).items()}

    return cached_tensors(path, compute, use_cache)


@register("regmean", "RegMean", "closed-form merge of every linear layer from the Gram matrices of its inputs on "
          "each task's exemplars, off-diagonals scaled by α; other parameters averaged (Jin et al., 2023)",
          params=(ALPHA, EXEMPLARS), uses_data=True, group="Training-free methods", order=210,
          reference="Jin et al., 2023")
def regmean(zoo, params, task_indices, inputs, progress):
    from . import MergeResult

    tv, names, idx = subset(zoo, task_indices)
    grams = []
    for n, t in enumerate(names):
        progress(n / len(names), f"RegMean: Gram matrices of {t} ({params['exemplars']} exemplars)")
        grams.append(task_grams(zoo, t, params["exemplars"], int(params.get("seed", 0))))
    merged = tv.deltas.mean(0)  # everything but the linear maps: averaged
    for key, sl, shape in tv.layout.items():
        if key not in grams[0]:
            continue
        finetuned = [(tv.pretrained[sl] + tv.deltas[k, sl]).view(shape).double() for k in range(len(names))]
        as_linear = [w.T for w in finetuned] if key == "proj" else finetuned  # proj is applied as x @ proj
        w = regmean_linear([g[key].to(merged.device) for g in grams], as_linear, params["alpha"])
        w = w.T if key == "proj" else w
        merged[sl] = (w.reshape(-1) - tv.pretrained[sl].double()).to(merged.dtype)
    region = plugin_region(tv, params, inputs, idx, task_indices is None)
    return MergeResult(tv.pretrained + masked(merged, region), "regmean", params, region)


#: RegMean++'s exemplars and off-diagonal scaling: FusionBench's clip_regmean_plusplus.yaml
EXEMPLARS_PP = EXEMPLARS.with_default(256, "FusionBench's RegMean++ num_regmean_examples 256")
ALPHA_PP = ALPHA.with_default(0.95, "FusionBench's RegMean++ reduce_non_diagonal_ratio 0.95")


def _blocks(encoder) -> list:
    blocks = list(encoder.transformer.resblocks)
    if not getattr(encoder.transformer, "batch_first", True):
        raise NotImplementedError("RegMean++ runs the blocks batch first (open_clip's default)")
    return blocks


@honours_no_cache
def regmean_pp_merged(zoo, tv, names: list[str], params: dict, progress, use_cache: bool = True) -> torch.Tensor:
    """RegMean++'s merged task vector (N,) for the tasks ``names`` (``tv``'s), cached."""
    spec = fit_spec(zoo, "regmean++", {"params": {k: v for k, v in params.items() if k not in ("tau", "sensitivity")},
                                       "tasks": names}, tensors=True)

    def compute() -> dict:
        device = device_of()
        encoder = zoo.make_encoder().to(device).eval()
        K = len(names)
        finetuned = [{key: (tv.pretrained[sl] + tv.deltas[k, sl]).view(shape).to(device, torch.float32)
                      for key, sl, shape in tv.layout.items()} for k in range(K)]
        merged = torch.zeros(tv.N, dtype=torch.float64)  # ln_post and proj keep θ_pre (as the released code leaves them)
        blocks = _blocks(encoder)
        in_block = [f"transformer.resblocks.{n}." for n in range(len(blocks))]
        embed_keys = [key for key in tv.layout.keys if not key.startswith(("transformer.", "ln_post.")) and key != "proj"]
        for key, sl, shape in tv.layout.items():
            if key in embed_keys:  # embeddings and the norm before the blocks: averaged
                merged[sl] = tv.deltas[:, sl].double().mean(0).cpu()
        merged_weights = {key: (tv.pretrained[sl].double().cpu() + merged[sl]).view(shape).to(device, torch.float32)
                          for key, sl, shape in tv.layout.items() if key in embed_keys}
        encoder.load_state_dict(merged_weights, strict=False)
        mean, std = channel_stats(zoo.mean, zoo.std, device)
        inputs = []  # per task, its exemplars' tokens after the merged embedding, in batches of 64
        for t in names:
            images, _ = exemplars_of(zoo, t, params["exemplars"], int(params.get("seed", 0)), device)
            inputs.append([encoder._embeds(normalise(images[s:s + 64], mean, std)) for s in range(0, len(images), 64)])
        for n, block in enumerate(blocks):
            progress(n / len(blocks), f"RegMean++: block {n + 1} of {len(blocks)}")
            prefix = in_block[n]
            local = [(key, sl, shape) for key, sl, shape in tv.layout.items() if key.startswith(prefix)]
            grams = []
            for k in range(K):
                own = {key[len(prefix):]: finetuned[k][key] for key, _, _ in local}
                grams.append(block_grams(block, own, inputs[k])[0])
            block_merged = {}
            for key, sl, shape in local:
                name = key[len(prefix):]
                if name in grams[0]:
                    w = regmean_linear([g[name] for g in grams], [finetuned[k][key].double() for k in range(K)],
                                       params["alpha"])
                else:
                    w = torch.stack([finetuned[k][key].double() for k in range(K)]).mean(0)
                block_merged[name] = w.to(torch.float32)
                merged[sl] = (w.reshape(-1).cpu() - tv.pretrained[sl].double().cpu())
            inputs = [block_grams(block, block_merged, batches, grams=False)[1] for batches in inputs]  # next block's
        progress(1.0, "RegMean++ done")
        return {"merged": merged.to(tv.dtype)}

    return cached_tensors(spec.path(), compute, use_cache)["merged"]


@register("regmean++", "RegMean++", "RegMean block by block, each block's inputs taken from the merged blocks below "
          "(FusionBench's regmean_plusplus); embeddings averaged", params=(ALPHA_PP, EXEMPLARS_PP), uses_data=True,
          group="Training-free methods", order=215, reference="Nguyen et al., 2025 (FusionBench)")
def regmean_plusplus(zoo, params, task_indices, inputs, progress):
    from . import MergeResult

    tv, names, idx = subset(zoo, task_indices)
    merged = regmean_pp_merged(zoo, tv, names, params, progress).to(tv.pretrained.device)
    region = plugin_region(tv, params, inputs, idx, task_indices is None)
    return MergeResult(tv.pretrained + masked(merged, region), "regmean++", params, region)
