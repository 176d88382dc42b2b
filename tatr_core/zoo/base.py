"""The zoo's types: a pretrained image encoder, K fine-tuned copies, and K tasks with data and heads.

Task images are kept as ``uint8`` tensors already resized to the model's resolution; the evaluator
normalises them batch by batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..checkpoints import StateDict
from ..errors import TatrError
from ..placement import Residency, describe_plan
from ..vectors import TaskVectors

#: progress(fraction_done in [0, 1], message)
Progress = Callable[[float, str], None]


def no_progress(fraction: float, message: str) -> None:
    return None


@dataclass
class Task:
    name: str
    classnames: list[str]
    head: torch.Tensor  #: (classes, embed_dim): logits = normalize(features) @ head.T
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]  #: split -> (uint8 (n, 3, S, S), int64 (n,))
    source: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name not in self.splits:
            raise TatrError(f"task '{self.name}' has no '{name}' split (it has {', '.join(self.splits)})")
        return self.splits[name]


@dataclass
class Zoo:
    name: str
    arch: str  #: open_clip architecture name (a registered model config)
    pretrained: StateDict  #: image encoder θ_pre, open_clip vision-tower keys
    finetuned: dict[str, StateDict]  #: task name -> fine-tuned image encoder θ_k
    tasks: dict[str, Task]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    key: str  #: content hash: results computed on this zoo are cached under it
    info: dict = field(default_factory=dict)  #: recipe, build time, reference accuracies, paths

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    @property
    def image_size(self) -> int:
        return int(next(iter(self.tasks.values())).splits["test"][0].shape[-1])

    def check_tasks(self, names: Sequence[str] | None) -> list[str]:
        if names is None:
            return self.task_names
        unknown = [n for n in names if n not in self.tasks]
        if unknown:
            raise TatrError(f"unknown task '{unknown[0]}' in zoo '{self.name}'; its tasks are {', '.join(self.tasks)}")
        twice = sorted({n for n in names if list(names).count(n) > 1})
        if twice:
            raise TatrError(f"task '{twice[0]}' is named more than once; name each task once")
        if not names:
            raise TatrError(f"no task named; zoo '{self.name}' has {', '.join(self.tasks)}")
        return list(names)

    @cached_property
    def host_task_vectors(self) -> TaskVectors:
        """Task vectors of every task, in task order, in host memory (built once per zoo object;
        a manifest zoo fills this with its mapped file)."""
        names = self.task_names
        return TaskVectors.from_state_dicts(self.pretrained, [self.finetuned[n] for n in names], names,
                                            [f"{self.name}:{n}" for n in names], f"{self.name}:pretrained")

    @cached_property
    def residency(self) -> Residency:
        """What of this zoo lives on the compute device (:mod:`tatr_core.placement`'s memory rule)."""
        return Residency()

    @property
    def task_vectors(self) -> TaskVectors:
        """The task vectors the merges use: on the compute device when the memory rule allows
        (moved there once), else :attr:`host_task_vectors`.  On the CPU they are the same object."""
        return self.residency.vectors(self.host_task_vectors)

    def resident(self, name: str, value):
        """``value`` (a named set of merge inputs: gradients, plane vectors) on the compute device when the
        memory rule allows; the task vectors are placed first, since the rule counts them before any input."""
        _ = self.task_vectors
        return self.residency.inputs(name, value)

    def placement(self) -> str:
        """Where the task vectors and gradients live (the memory rule's decision for this zoo), in words."""
        _ = self.task_vectors
        return describe_plan(self.residency.plan)

    def task_vectors_for(self, names: Sequence[str]) -> TaskVectors:
        names = self.check_tasks(names)
        return self.task_vectors.subset([self.task_names.index(n) for n in names])

    def make_encoder(self) -> torch.nn.Module:
        """A fresh image encoder module holding θ_pre (use one per process; swap parameters)."""
        from ..models import create_image_encoder

        encoder = create_image_encoder(self.arch)
        if "proj" not in self.pretrained and getattr(encoder, "proj", None) is not None:
            encoder.proj = None  # Hugging Face CLIPVisionModel-style zoos have no projection
        missing, unexpected = encoder.load_state_dict(self.pretrained, strict=False)
        if unexpected or missing:
            raise TatrError(f"zoo '{self.name}': the pretrained weights do not fit architecture '{self.arch}' "
                            f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        return encoder.eval()
