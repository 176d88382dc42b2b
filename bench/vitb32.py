"""Random state dicts with exactly the shapes of open_clip's ViT-B/32 image encoder."""
from __future__ import annotations

import torch

import tatr_core  # noqa: F401
import open_clip


def vitb32_shapes() -> dict[str, torch.Size]:
    visual = open_clip.create_model("ViT-B-32", pretrained=None, device="meta").visual
    return {k: v.shape for k, v in visual.state_dict().items()}


def random_state_dict(shapes: dict, seed: int, base: dict | None = None, scale: float = 1e-3) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, s in shapes.items():
        noise = torch.randn(s, generator=g)
        out[k] = noise if base is None else base[k] + scale * noise
    return out


def structured_update(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """A task-vector-like update: small dense noise, plus for a matrix a rank-4 update (the few
    directions per matrix that real task vectors have)."""
    update = 1e-4 * torch.randn(shape, generator=generator)
    if len(shape) == 2:
        a, b = torch.randn(shape[0], 4, generator=generator), torch.randn(4, shape[1], generator=generator)
        update += 2e-3 * (a @ b) / 4
    return update
