"""Accuracy and mean cross-entropy per task, for any parameters of the zoo's image encoder.

One encoder module per :class:`Evaluator`; parameters are swapped in with
``torch.func.functional_call`` (no copy of the model per merge).  Images are cached as
``uint8`` tensors at the model's resolution and normalised batch by batch on the device,
under ``torch.inference_mode``.

Precision (:data:`PRECISIONS`; ``precision=``, else the run options' :mod:`tatr_core.options`: the CLI's
``--precision``, the sidebar's control, ``$TATR_PRECISION``):

* ``auto`` (default): on CUDA, bf16 autocast (float32 accumulation in the matmuls) when a check
  against float32 on a few batches of every task finds the same predictions, and TF32 for the
  float32 matrix products; on the CPU, float32.  The check ignores near-ties
  (:func:`bf16_agrees`): an image whose two best classes are closer than bf16 can resolve is no
  disagreement, so a real model passes.
* ``fp32``: float32 everywhere, TF32 off;
* ``bf16``: bf16 autocast whatever the check says (on the CPU too, where it is slow without AMX).

The loss-based analyses (conflict matrices, landscapes) evaluate in float32 under ``auto``:
bf16 blurs the small loss differences they are made of (``evaluate(..., precision="fp32")``).
"""
from __future__ import annotations

import math

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call

from . import options
from .errors import TatrError
from .models import channel_stats, head_logits, normalise
from .options import PRECISIONS
from .placement import compute_device
from .zoo import Zoo

SPLITS = ("train", "val", "test")
#: bf16 keeps 8 significant bits: logits closer than this share of their magnitude are a tie to it
BF16_RESOLUTION = 2.0 ** -7


def check_precision(precision: str | None) -> str:
    """``precision``, else the run options' (:func:`tatr_core.options.current`); an unknown one is refused,
    naming the choices."""
    precision = precision or options.current().precision
    if precision not in PRECISIONS:
        raise TatrError(f"unknown precision '{precision}': use {', '.join(PRECISIONS)} (--precision, TATR_PRECISION)")
    return precision


def bf16_agrees(ref: torch.Tensor, low: torch.Tensor, min_agreement: float = 0.99) -> bool:
    """Whether bf16 logits ``low`` predict as float32 logits ``ref`` do (both (n, classes)), on the images
    that are not near-ties: where float32's two best classes are further apart than twice what bf16
    resolves at that image's logit magnitude, or than the typical (median) bf16 error of the batch,
    a different prediction is a disagreement.  True when at least ``min_agreement`` of those images
    agree (or none is decisive)."""
    ref, low = ref.float(), low.float()
    if ref.shape[1] < 2:
        return True
    top2 = ref.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    typical = (ref - low).abs().amax(dim=1).median()
    band = torch.clamp(BF16_RESOLUTION * ref.abs().amax(dim=1), min=float(typical))
    decisive = margin > 2 * band
    if not bool(decisive.any()):
        return True
    same = ref.argmax(1) == low.argmax(1)
    return float(same[decisive].float().mean()) >= min_agreement


@dataclass
class TaskResult:
    accuracy: float
    loss: float
    n: int
    predictions: list[int] | None = None  #: each image's predicted class, when asked for

    def as_dict(self) -> dict:
        out = {"accuracy": self.accuracy, "loss": self.loss, "n": self.n}
        return out if self.predictions is None else {**out, "predictions": self.predictions}


def default_device() -> torch.device:
    """The compute device (:func:`tatr_core.placement.compute_device`)."""
    return compute_device()


#: the largest split an evaluator keeps on a GPU (a larger one is moved batch by batch from the mapped file; on the
#: CPU a mapped split is always read batch by batch)
DEVICE_SPLIT_BYTES = 8 << 30


def sample_indices(n: int, sample: int | None, seed: int) -> torch.Tensor | None:
    """A fixed seeded subsample of ``sample`` out of ``n`` indices (None: all)."""
    if sample is None or sample >= n:
        return None
    if sample <= 0:
        raise TatrError(f"sample size must be positive, got {sample}")
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:sample].sort().values


class Evaluator:
    def __init__(self, zoo: Zoo, device: torch.device | str | None = None, batch_size: int = 1024,
                 precision: str | None = None):
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
        self.default_precision = check_precision(precision)
        self._auto_bf16: bool | None = None  # the bf16 check's verdict, made on first use under auto on CUDA

    # -- data ---------------------------------------------------------------------------
    def data(self, task: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if split not in SPLITS:
            raise TatrError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
        key = (task, split)
        if key not in self._data:
            images, labels = self.zoo.tasks[task].split(split)
            if isinstance(images, torch.Tensor):  # a built-in zoo's split, in memory
                self._data[key] = (images.to(self.device), labels.to(self.device))
            elif self.device.type != "cpu" and math.prod(images.shape) <= DEVICE_SPLIT_BYTES:  # uint8: 1 byte each
                self._data[key] = (images.to(self.device), labels.to(self.device))  # kept on the GPU
            else:  # a mapped split: decoded (what is missing, on every core), then read batch by batch from the
                # file, so that this process never holds it whole
                images.ensure(range(len(images)))
                self._data[key] = (images, labels.to(self.device))
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

    # -- precision ----------------------------------------------------------------------
    @property
    def precision(self) -> str:
        """The precision in effect: the run options' in this context (a page's control, a command's flag)
        when one was asked for explicitly, else the evaluator's own."""
        asked = options.current().precision
        return asked if asked != "auto" else self.default_precision

    def arithmetic(self, precision: str | None = None) -> tuple[bool, bool]:
        """``(bf16 autocast, TF32 matmuls)`` for an evaluation; ``precision="fp32"`` (what the loss-based
        analyses ask for) is float32 unless bf16 was asked for explicitly."""
        asked = self.precision
        if precision == "fp32" and asked != "bf16":
            asked = "fp32"
        cuda = self.device.type == "cuda"
        if asked == "fp32":
            return False, False
        if asked == "bf16":
            return True, cuda
        if cuda and self._auto_bf16 is None:
            self._auto_bf16 = self._bf16_agrees()
        return bool(cuda and self._auto_bf16), cuda

    @property
    def autocast(self) -> bool:
        return self.arithmetic()[0]

    @property
    def tf32(self) -> bool:
        return self.arithmetic()[1]

    def describe(self, precision: str | None = None) -> str:
        """Device and arithmetic in use, e.g. ``cuda:0 (NVIDIA H100), bf16 autocast`` or ``cpu, float32``."""
        where = str(self.device)
        if self.device.type == "cuda":
            where += f" ({torch.cuda.get_device_name(self.device)})"
        autocast, tf32 = self.arithmetic(precision)
        how = "bf16 autocast" if autocast else ("float32, TF32 matmuls" if tf32 else "float32")
        return f"{where}, {how} (precision {self.precision})"

    @contextmanager
    def _arithmetic(self, precision: str | None):
        """bf16 autocast and TF32 for this evaluation, as :meth:`arithmetic` decides."""
        autocast, tf32 = self.arithmetic(precision)
        old = torch.backends.cuda.matmul.allow_tf32 if self.device.type == "cuda" else None
        if old is not None:
            torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
                yield
        finally:
            if old is not None:
                torch.backends.cuda.matmul.allow_tf32 = old

    def features(self, params: dict[str, torch.Tensor], x: torch.Tensor, precision: str | None = None) -> torch.Tensor:
        with self._arithmetic(precision):
            out = functional_call(self.encoder, params, (x,), strict=False) if params else self.encoder(x)
        return out.float()

    # -- evaluation ---------------------------------------------------------------------
    @torch.inference_mode()
    def evaluate(self, params: Mapping[str, torch.Tensor] | torch.Tensor | None, tasks: Sequence[str] | None = None,
                 split: str = "test", sample: int | None = None, seed: int = 0,
                 feature_maps: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
                 precision: str | None = None, predictions: bool = False) -> dict[str, TaskResult]:
        """Accuracy and mean cross-entropy on each task (all tasks by default); with ``predictions``, also
        each image's predicted class (in the order of the split, or of the sample's sorted indices).

        ``feature_maps[task]``, when given, transforms that task's representations before its head
        (Representation Surgery's per-task modules).  ``precision="fp32"`` evaluates in float32 this
        once unless the evaluator was asked for bf16 (the loss-based analyses ask for it).
        """
        with self._lock:
            return self._evaluate(params, tasks, split, sample, seed, feature_maps, precision, predictions)

    def _evaluate(self, params, tasks, split, sample, seed, feature_maps, precision=None,
                  predictions: bool = False) -> dict[str, TaskResult]:
        p = self.as_params(params)
        out = {}
        if split not in SPLITS:
            raise TatrError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
        for task in self.zoo.check_tasks(tasks):
            n_all = len(self.zoo.tasks[task].split(split)[1])
            idx = sample_indices(n_all, sample, seed)
            if idx is not None:  # a sample: only its images are read (a mapped split decodes only those)
                images, labels = self.zoo.tasks[task].split(split)
                images, labels = images[idx].to(self.device), labels[idx].to(self.device)
            else:
                images, labels = self.data(task, split)
            correct, loss_sum, predicted = 0, 0.0, []
            for start in range(0, len(labels), self.batch_size):
                x = self.normalise(images[start:start + self.batch_size].to(self.device, non_blocking=True))
                y = labels[start:start + self.batch_size]
                z = self.features(p, x, precision)
                if feature_maps and task in feature_maps:
                    fm = feature_maps[task]
                    z = (fm.to(self.device) if isinstance(fm, torch.nn.Module) else fm)(z)
                logits = head_logits(z, self.heads[task])
                if not bool(torch.isfinite(logits).all()):
                    raise TatrError(f"the model's outputs on task '{task}' are not finite (NaN or Inf logits): its "
                                    "parameters are out of the range the arithmetic can hold; a merge's λ (--lam) far "
                                    "above 1 does this. Use a smaller --lam; no accuracy was computed")
                loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
                guess = logits.argmax(1)
                correct += int((guess == y).sum())
                if predictions:
                    predicted += guess.tolist()
            n = len(labels)
            out[task] = TaskResult(correct / n, loss_sum / n, n, predicted if predictions else None)
        return out

    def _bf16_agrees(self, batches: int = 2) -> bool:
        """Whether bf16 autocast predicts as float32 does on a few batches of every task (near-ties aside)."""
        with torch.inference_mode():
            for task in self.zoo.task_names:
                images, _ = self.zoo.tasks[task].split("test")
                x = self.normalise(images[: min(self.batch_size * batches, 256)].to(self.device))
                ref = head_logits(self.encoder(x).float(), self.heads[task])
                with torch.autocast(self.device.type, dtype=torch.bfloat16):
                    low = head_logits(self.encoder(x).float(), self.heads[task])
                if not bf16_agrees(ref, low):
                    return False
        return True


def average_accuracy(results: Mapping[str, TaskResult]) -> float:
    return sum(r.accuracy for r in results.values()) / len(results)
