"""Tiny random models written in the exact formats real zoos use."""
from __future__ import annotations

import contextlib
import sys
import types

import torch

import tatr_core  # noqa: F401  (compat shim before open_clip)
import open_clip

TINY_VISION = {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16, "mlp_ratio": 2.0}
TINY_TEXT = {"context_length": 16, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}


def tiny_clip(seed: int = 0, quick_gelu: bool = False) -> "open_clip.CLIP":
    torch.manual_seed(seed)
    return open_clip.CLIP(embed_dim=16, vision_cfg=TINY_VISION, text_cfg=TINY_TEXT, quick_gelu=quick_gelu).eval()


def perturbed(model, seed: int, scale: float = 0.05):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


@contextlib.contextmanager
def planted_task_vectors_code():
    """Plant throwaway ``src.modeling.ImageEncoder`` / ``src.heads.ClassificationHead`` modules
    shaped like the task_vectors repository's, and remove them afterwards."""
    src, modeling, heads = (types.ModuleType(n) for n in ("src", "src.modeling", "src.heads"))

    class ImageEncoder(torch.nn.Module):
        def __init__(self, clip_model):
            super().__init__()
            self.model = clip_model
            self.train_preprocess = open_clip.image_transform(32, is_train=True)
            self.val_preprocess = open_clip.image_transform(32, is_train=False)
            self.cache_dir = "/nonexistent/cache"
            if hasattr(self.model, "transformer"):
                delattr(self.model, "transformer")

    class ClassificationHead(torch.nn.Linear):
        def __init__(self, normalize, weights, biases=None):
            out_dim, in_dim = weights.shape
            super().__init__(in_dim, out_dim)
            self.normalize = normalize
            self.weight = torch.nn.Parameter(weights.clone())
            self.bias = torch.nn.Parameter(biases.clone() if biases is not None else torch.zeros_like(self.bias))

    ImageEncoder.__module__, ClassificationHead.__module__ = "src.modeling", "src.heads"
    ImageEncoder.__qualname__, ClassificationHead.__qualname__ = "ImageEncoder", "ClassificationHead"
    modeling.ImageEncoder, heads.ClassificationHead = ImageEncoder, ClassificationHead
    src.modeling, src.heads = modeling, heads
    saved = {k: sys.modules.get(k) for k in ("src", "src.modeling", "src.heads")}
    sys.modules.update({"src": src, "src.modeling": modeling, "src.heads": heads})
    try:
        yield modeling, heads
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
