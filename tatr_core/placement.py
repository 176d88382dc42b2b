"""Where the core's tensors live: the compute device, and the memory rule for K tasks of N parameters.

The **compute device** is CUDA when there is one, the CPU otherwise; the run options' ``device``
(:mod:`tatr_core.options`: ``TATR_DEVICE`` = ``cpu``, ``cuda``, ``cuda:1``) overrides it.  The evaluator, the gradients, the data-using fits and the merges
all use it, so a merge computes where its inputs already are and nothing makes a host round trip per
merge.  On the CPU every function here is the identity: no copy is made.

**The memory rule** (b bytes per number, 4 for float32; "free" is the device memory free when the
zoo's task vectors are first used, before the evaluator caches images):

1. θ_pre and the K task vectors go to the device when (K + 1)·N·b plus a merge's working room of
   4·N·b (the merged vector, the mask, θ and one temporary) fit in half of the free memory.
2. Each named set of merge inputs goes to the device, once, while it fits in what is left of that
   half: the gradients of one exemplar draw, E|∇L_k| and E∇L_k (2·K·N·b), or a landscape's plane
   vectors (N·b each).  The least recently used set makes room for a new one.
3. Whatever does not fit stays in host memory (a mapped file for manifest zoos) and is streamed:
   the sensitivity Ω reads the host tensors in column blocks of 2^20 parameters (K·2^20·b bytes a
   block), so only Ω (N·b) and the mask are whole on the device.

The other half of the device stays for the evaluator (the encoder, the cached uint8 test images,
activations) and for methods whose working set is larger than TA's (TIES holds K·N trim masks).
``plan()`` gives the decision for given sizes, and ``describe_plan()`` the sentence the CLI and
the sidebar show.  On an 80 GB GPU in float32 (``bench/memory_plan.py`` prints the table): the
ViT-B/32 zoo with K = 8 holds everything on the device (2.9 GiB of task vectors, 5.2 GiB of
gradients); ViT-L/14 with K = 20 holds its 23.8 GiB of task vectors there and streams its 45.3 GiB
of gradients.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from . import options
from .errors import TatrError

#: share of the free device memory the resident tensors may use
RESIDENT_SHARE = 0.5
#: a merge's working room, in N-sized vectors
MERGE_ROOM = 4


def compute_device() -> torch.device:
    """The run options' device when set (``TATR_DEVICE``), else CUDA when available, else the CPU."""
    spec = options.current().device
    if spec:
        try:
            device = torch.device(spec)
        except RuntimeError:
            raise TatrError(f"TATR_DEVICE={spec!r} is not a device; use cpu, cuda or cuda:N") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise TatrError(f"TATR_DEVICE={spec} but this torch sees no CUDA GPU; unset it or use cpu")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def free_memory_bytes(device) -> int:
    """Memory free for new tensors on ``device``: CUDA's own count, or the host's available RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


@dataclass(frozen=True)
class Plan:
    """What the memory rule puts on the device for K tasks of N parameters."""

    device: str
    K: int
    N: int
    itemsize: int
    free: int  #: bytes free on the device when planned
    vectors_resident: bool  #: θ_pre and the task vectors
    room: int  #: bytes left for merge inputs (gradients, plane vectors) once the task vectors are there

    @property
    def vector_bytes(self) -> int:
        return (self.K + 1) * self.N * self.itemsize

    @property
    def gradient_bytes(self) -> int:
        return 2 * self.K * self.N * self.itemsize


def plan(K: int, N: int, itemsize: int, device, free: int | None = None) -> Plan:
    """The memory rule (module docstring) for ``K`` task vectors of ``N`` numbers of ``itemsize`` bytes."""
    device = torch.device(device)
    if device.type == "cpu":  # host memory is where the tensors are already
        return Plan("cpu", K, N, itemsize, free or 0, True, 1 << 62)
    free = free_memory_bytes(device) if free is None else free
    budget = int(RESIDENT_SHARE * free)
    vectors = (K + 1 + MERGE_ROOM) * N * itemsize
    if vectors > budget:
        return Plan(str(device), K, N, itemsize, free, False, 0)
    return Plan(str(device), K, N, itemsize, free, True, budget - vectors)


def describe_plan(p: Plan) -> str:
    """One line: where the task vectors and gradients of this plan live."""
    if p.device == "cpu":
        return "task vectors and gradients in host memory (CPU)"
    gib = 2**30
    if not p.vectors_resident:
        return (f"task vectors in host memory ({p.vector_bytes / gib:.1f} GiB do not fit in half of the "
                f"{p.free / gib:.1f} GiB free on {p.device}); merges run on the CPU")
    grads = (f"gradients on {p.device} ({p.gradient_bytes / gib:.1f} GiB a set)" if p.gradient_bytes <= p.room
             else f"gradients in host memory ({p.gradient_bytes / gib:.1f} GiB), streamed to {p.device} "
                  "in blocks for Ω")
    return f"task vectors on {p.device} ({p.vector_bytes / gib:.1f} GiB); {grads}"


def _tensors(value: Any):
    """The tensors in ``value`` (a tensor, or a dict / list / tuple of them, nested)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (dict, list, tuple)):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _tensors(item)


def nbytes(value: Any) -> int:
    """Bytes held by the tensors in ``value`` (a tensor, or a dict / list / tuple of them)."""
    return sum(t.numel() * t.element_size() for t in _tensors(value))


def _all_on(value: Any, device: torch.device) -> bool:
    return all(t.device.type == device.type for t in _tensors(value))


def to_device(value: Any, device) -> Any:
    """``value`` (a tensor, or a dict / list / tuple of them) on ``device``; the same object when it is there."""
    device = torch.device(device)
    if isinstance(value, torch.Tensor):
        if value.device == device or (device.type == value.device.type and device.index is None):
            return value
        return value.to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    return value


class Residency:
    """The tensors of one zoo kept on its compute device by the memory rule, each moved there once.

    ``vectors(tv)`` gives the task vectors to merge with (on the device when they fit);
    ``inputs(name, value)`` gives a named set of merge inputs (gradients, plane vectors) on the
    device while they fit in the plan's room, else ``value`` as it is (host memory, streamed by blocks).
    Named sets are kept least recently used first out, so a new set frees the room of old ones.
    """

    def __init__(self, device=None):
        self.device = torch.device(device) if device is not None else compute_device()
        self.plan: Plan | None = None
        self._vectors = None
        self._inputs: dict[str, tuple[Any, int]] = {}  #: name -> (value, bytes it holds on the device)

    def vectors(self, host_tv):
        if self._vectors is None:
            from .vectors import TaskVectors

            self.plan = plan(host_tv.K, host_tv.N, host_tv.pretrained.element_size(), self.device)
            if self.device.type == "cpu" or not self.plan.vectors_resident:
                self._vectors = host_tv
            else:
                self._vectors = TaskVectors(host_tv.layout, host_tv.pretrained.to(self.device),
                                            host_tv.deltas.to(self.device), host_tv.names, host_tv.template)
        return self._vectors

    def inputs(self, name: str, value: Any) -> Any:
        """``value`` (host tensors) as resident under ``name``: on the device when the rule allows."""
        if self.device.type == "cpu" or self.plan is None or not self.plan.vectors_resident:
            return value
        if name in self._inputs:
            self._inputs[name] = self._inputs.pop(name)  # most recently used last
            return self._inputs[name][0]
        if _all_on(value, self.device):
            return value  # placed already (the gradients place themselves when computed)
        size = nbytes(value)
        if size > self.plan.room:
            return value  # never fits: stays on the host, streamed
        while self._inputs and sum(b for _, b in self._inputs.values()) + size > self.plan.room:
            self._inputs.pop(next(iter(self._inputs)))
        self._inputs[name] = (to_device(value, self.device), size)
        return self._inputs[name][0]
