"""Make ``import open_clip`` work on a CPU build of torch.

The only torchvision wheel that matches ``torch==2.13.0`` is a CUDA build.  Its
compiled extension (``torchvision/_C.so``) cannot load against CPU torch, and
``torchvision/_meta_registrations.py`` then fails at import time with
"operator torchvision::nms does not exist", because it registers fake kernels for
operators that ``_C.so`` would have defined.  Defining the two operator schemas
(``nms`` and ``qnms``) ourselves, before torchvision is imported, lets the import
succeed.  The project never calls these operators; it only needs torchvision's
transforms, which open_clip imports.

Import this module before ``open_clip`` or ``torchvision`` (``tatr_core`` does so
in its ``__init__``).  On a torch/torchvision pair whose extension loads (a CUDA
machine), the extension is loaded here and defines the operators itself; defining
them first would make its later registration abort the process (seen on an H100
machine with torch 2.11 + torchvision 0.26).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor",
}

_library = None  # kept alive for the life of the process: dropping it unregisters the ops


def _op_exists(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        return True
    except RuntimeError:
        return False


def _load_torchvision_extension() -> bool:
    """Load torchvision's compiled operators when they match this torch; False when they cannot load."""
    spec = importlib.util.find_spec("torchvision")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for lib in sorted(Path(folder).glob("_C*.so")) + sorted(Path(folder).glob("_C*.pyd")):
            try:
                torch.ops.load_library(str(lib))
                return True
            except (OSError, RuntimeError):  # a CUDA build of torchvision against CPU torch
                return False
    return False


def ensure_torchvision_ops() -> list[str]:
    """Define the torchvision operator schemas that are missing and that torchvision's own
    extension cannot provide; return their names."""
    global _library
    missing = [name for name in _SCHEMAS if not _op_exists(name)]
    if missing and _load_torchvision_extension():
        missing = [name for name in _SCHEMAS if not _op_exists(name)]
    if missing:
        if _library is None:
            _library = torch.library.Library("torchvision", "FRAGMENT")
        for name in missing:
            _library.define(_SCHEMAS[name])
    return missing


ensure_torchvision_ops()
