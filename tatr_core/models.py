"""open_clip models: the project's registered tiny CLIP configs, tokenizers, zero-shot heads.

``model_configs/*.json`` are open_clip model configs (same schema as open_clip's own
``ViT-B-32.json``) added to open_clip's factory, so ``open_clip.create_model("TATR-mini-ViT")``
works like any built-in architecture, with ViT-B/32's parameter names.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    import open_clip

CONFIG_DIR = Path(__file__).with_name("model_configs")

#: Logit scale of the zero-shot heads, as in task_vectors (CLIP's learned 100).
HEAD_LOGIT_SCALE = 100.0
#: CLIP's image normalisation (open_clip's OPENAI_DATASET_MEAN / _STD; a test keeps them equal).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@functools.cache
def open_clip_module():
    """open_clip, imported on first use (it takes seconds: the command line's help and the merge of
    bare checkpoints never need it), behind the compat shim, with the project's model configs added."""
    from . import compat, interrupts_deferred  # noqa: F401  (before torchvision)

    with interrupts_deferred():  # Ctrl-C inside its import can abort the process (see there)
        import open_clip

    open_clip.add_model_config(CONFIG_DIR)
    return open_clip


def normalise(images_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images (n, 3, H, W) → float in ``mean``'s dtype, scaled to [0, 1] and normalised;
    ``mean``/``std`` shaped (1, 3, 1, 1)."""
    return (images_uint8.to(mean.dtype if mean.is_floating_point() else torch.float32) / 255.0 - mean) / std


def channel_stats(mean, std, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std as (1, 3, 1, 1) tensors for :func:`normalise`."""
    return (torch.tensor(mean, device=device).view(1, 3, 1, 1), torch.tensor(std, device=device).view(1, 3, 1, 1))


def model_config(arch: str) -> dict | None:
    """open_clip's model config of ``arch`` (None when it has none). The project's own architectures
    are read from their JSON file (``model_configs/``), exactly what open_clip's registry holds for them,
    without importing open_clip (seconds): a built-in zoo's key needs it before anything else does."""
    path = CONFIG_DIR / f"{arch}.json"
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return open_clip_module().get_model_config(arch)


def create_clip(arch: str) -> "open_clip.CLIP":
    open_clip = open_clip_module()
    if arch not in open_clip.list_models():
        raise ValueError(f"unknown architecture '{arch}'")
    import logging

    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # silence "No pretrained weights loaded"
    try:
        return open_clip.create_model(arch, pretrained=None)
    finally:
        logging.getLogger().setLevel(level)


def create_image_encoder(arch: str) -> torch.nn.Module:
    """The vision tower alone (``open_clip``'s ``VisionTransformer``), randomly initialised."""
    return create_clip(arch).visual


def tokenizer(arch: str):
    return open_clip_module().get_tokenizer(arch)


@torch.no_grad()
def zero_shot_head(model, tok, classnames: Sequence[str], templates: Sequence[str],
                   scale: float | None = None) -> torch.Tensor:
    """Classification head from class-name prompts through the text tower (task_vectors protocol):
    per class, the normalised mean of the normalised prompt embeddings, times the logit scale
    (``scale``; by default :data:`HEAD_LOGIT_SCALE`, the value a real CLIP has learned)."""
    model.eval()
    weights = []
    for name in classnames:
        emb = F.normalize(model.encode_text(tok([t.format(name) for t in templates])), dim=-1)
        weights.append(F.normalize(emb.mean(0), dim=-1))
    return torch.stack(weights) * (HEAD_LOGIT_SCALE if scale is None else float(scale))


def head_logits(features: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """Logits of a normalising linear head (task_vectors' ``ClassificationHead(normalize=True)``)."""
    return F.normalize(features, dim=-1) @ head.T
