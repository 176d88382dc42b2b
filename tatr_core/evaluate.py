"""Accuracy and mean cross-entropy per task, for any parameters of the zoo's image encoder.

One encoder module per :class:`Evaluator`; parameters are swapped in with
``torch.func.functional_call`` (no copy of the model per merge).  Images are cached as
``uint8`` tensors at the model's resolution and normalised batch by batch on the device,
under ``torch.inference_mode``.  On CUDA, evaluation runs under bf16 autocast (float32
accumulation in the matmuls); a check against float32 on a few batches at start-up turns it
off if the two disagree.
"""
from __future__ import annotations

import threading

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call

from .errors import TatrError
from .models import channel_stats, head_logits, normalise
from .zoo import Zoo

SPLITS = ("train", "val", "test")


@dataclass
class TaskResult:
    accuracy: float
    loss: float
    n: int

    def as_dict(self) -> dict:
        return {"accuracy": self.accuracy, "loss": self.loss, "n": self.n}


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sample_indices(n: int, sample: int | None, seed: int) -> torch.Tensor | None:
    """A fixed seeded subsample of ``sample`` out of ``n`` indices (None: all)."""
    if sample is None or sample >= n:
        return None
    if sample <= 0:
        raise TatrError(f"sample size must be positive, got {sample}")
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:sample].sort().values


class Evaluator:
    def __init__(self, zoo: Zoo, device: torch.device | str | None = None, batch_size: int = 1024):
        self.zoo = zoo
        self.device = torch.device(device) if device is not None else default_device()
        self.batch_size = batch_size
        self.encoder = zoo.make_encoder().to(self.device)
        self.mean, self.std = channel_stats(zoo.mean, zoo.std, self.device)
        self.heads = {name: t.head.to(self.device, torch.float32) for name, t in zoo.tasks.items()}
        self._data: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        # one encoder serves every evaluation with swapped parameters: the dashboard's sessions and its
        # background jobs share it, so one evaluation at a time holds it
        self._lock = threading.RLock()
        self.autocast = False
        if self.device.type == "cuda":
            self.autocast = self._bf16_agrees()

    # -- data ---------------------------------------------------------------------------
    def data(self, task: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if split not in SPLITS:
            raise TatrError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
        key = (task, split)
        if key not in self._data:
            images, labels = self.zoo.tasks[task].split(split)
            self._data[key] = (images.to(self.device), labels.to(self.device))
        return self._data[key]

    def normalise(self, images_uint8: torch.Tensor) -> torch.Tensor:
        return normalise(images_uint8, self.mean, self.std)

    # -- parameters ---------------------------------------------------------------------
    def as_params(self, params: Mapping[str, torch.Tensor] | torch.Tensor | None) -> dict[str, torch.Tensor]:
        """A flat θ (layout of the zoo's task vectors) or a state dict → tensors on the device."""
        if params is None:
            return {}
        if isinstance(params, torch.Tensor):
            params = self.zoo.task_vectors.layout.unflatten(params)
        return {k: v.to(self.device, torch.float32) for k, v in params.items() if v.is_floating_point()}

    def features(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
            out = functional_call(self.encoder, params, (x,), strict=False) if params else self.encoder(x)
        return out.float()

    # -- evaluation ---------------------------------------------------------------------
    @torch.inference_mode()
    def evaluate(self, params: Mapping[str, torch.Tensor] | torch.Tensor | None, tasks: Sequence[str] | None = None,
                 split: str = "test", sample: int | None = None, seed: int = 0,
                 feature_maps: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None
                 ) -> dict[str, TaskResult]:
        """Accuracy and mean cross-entropy on each task (all tasks by default).

        ``feature_maps[task]``, when given, transforms that task's representations before its head
        (Representation Surgery's per-task modules).
        """
        with self._lock:
            return self._evaluate(params, tasks, split, sample, seed, feature_maps)

    def _evaluate(self, params, tasks, split, sample, seed, feature_maps) -> dict[str, TaskResult]:
        p = self.as_params(params)
        out = {}
        for task in self.zoo.check_tasks(tasks):
            images, labels = self.data(task, split)
            idx = sample_indices(len(labels), sample, seed)
            if idx is not None:
                idx = idx.to(self.device)
                images, labels = images[idx], labels[idx]
            correct, loss_sum = 0, 0.0
            for start in range(0, len(labels), self.batch_size):
                x = self.normalise(images[start:start + self.batch_size])
                y = labels[start:start + self.batch_size]
                z = self.features(p, x)
                if feature_maps and task in feature_maps:
                    fm = feature_maps[task]
                    z = (fm.to(self.device) if isinstance(fm, torch.nn.Module) else fm)(z)
                logits = head_logits(z, self.heads[task])
                loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
            n = len(labels)
            out[task] = TaskResult(correct / n, loss_sum / n, n)
        return out

    def _bf16_agrees(self, batches: int = 2) -> bool:
        """bf16 autocast is used only if it matches float32 on a few batches of every task."""
        with torch.inference_mode():
            for task in self.zoo.task_names:
                images, _ = self.data(task, "test")
                x = self.normalise(images[: self.batch_size * batches][:256])
                ref = head_logits(self.encoder(x).float(), self.heads[task])
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    low = head_logits(self.encoder(x).float(), self.heads[task])
                agree = float((ref.argmax(1) == low.argmax(1)).float().mean())
                if agree < 0.99 or float((ref - low).abs().max()) > 0.5:
                    return False
        return True


def average_accuracy(results: Mapping[str, TaskResult]) -> float:
    return sum(r.accuracy for r in results.values()) / len(results)
