"""Zoos: a pretrained image encoder, K fine-tuned copies, and K tasks with data and heads
(the types are in :mod:`.base`).

``load_zoo("mini")`` / ``load_zoo("micro")`` give the built-in zoos (:mod:`.mini`: installed from the
shipped build, or built, on first use); ``load_zoo("path/to/zoo.yaml")`` reads a manifest describing
a real zoo (:mod:`.manifest`).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import TatrError, shown
from ..paths import check_length
from . import manifest, mini
from .base import Progress, Task, Zoo, no_progress

__all__ = ["Progress", "Task", "Zoo", "load_zoo", "no_progress"]


def load_zoo(spec: str, progress: Progress = no_progress) -> Zoo:
    """A zoo by name (``mini``, ``micro``) or manifest path; built-in zoos are built when not cached."""
    if spec in mini.PRESETS:
        return mini.load(spec, progress)
    path = check_length(spec, "zoo manifest path")
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.exists():
        return manifest.load(path, progress)
    raise TatrError(f"unknown zoo {shown(spec)}: use {', '.join(mini.PRESETS)} or the path of a zoo manifest (.yaml/.json)")
