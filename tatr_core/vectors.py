"""Task vectors on flat views: Δ_k = θ_k − θ_pre (Eq. 1) over every floating-point tensor.

A :class:`ParamLayout` fixes the order of the merged tensors and maps each to a slice of
one flat vector of N numbers, so that every merge method, the trust region and the
analyses work on contiguous ``(N,)`` / ``(K, N)`` tensors, and a per-layer view is just a
slice.  Integer buffers are not merged: they are carried over from the pretrained model.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import torch

from .cache import cache_errors, notice, recomputing, write_bytes_atomic
from .checkpoints import StateDict, check_finite, load_image_encoder
from .errors import CheckpointError, TatrError
from .paths import check_space

#: Keys the pretrained model may hold that fine-tuned Hugging Face ``CLIPVisionModel``
#: checkpoints lack (they have no projection); they are carried over from the pretrained model.
CARRY_IF_MISSING_IN_FINETUNED = frozenset({"proj"})


@dataclass(frozen=True)
class ParamLayout:
    """Order, shapes and flat offsets of the merged (floating-point) tensors."""

    keys: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    offsets: tuple[int, ...]
    numel: int

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], exclude: frozenset[str] = frozenset()) -> "ParamLayout":
        keys, shapes, offsets, n = [], [], [], 0
        for key, value in sd.items():
            if value.is_floating_point() and key not in exclude:
                keys.append(key)
                shapes.append(value.shape)
                offsets.append(n)
                n += value.numel()
        if not keys:
            raise TatrError("the model has no floating-point tensors to merge")
        return cls(tuple(keys), tuple(shapes), tuple(offsets), n)

    def __len__(self) -> int:
        return len(self.keys)

    def items(self) -> Iterator[tuple[str, slice, torch.Size]]:
        """``(key, slice into the flat vector, shape)`` for every merged tensor."""
        for key, shape, off in zip(self.keys, self.shapes, self.offsets):
            yield key, slice(off, off + shape.numel()), shape

    def flatten(self, sd: Mapping[str, torch.Tensor], dtype: torch.dtype, source: str = "<state dict>",
                out: torch.Tensor | None = None) -> torch.Tensor:
        """Copy the layout's tensors of ``sd`` into one flat vector, checking keys and shapes."""
        missing = [k for k in self.keys if k not in sd]
        if missing:
            raise CheckpointError(f"{source}: key '{missing[0]}' is missing ({len(missing)} missing in all)")
        out = torch.empty(self.numel, dtype=dtype) if out is None else out
        for key, sl, shape in self.items():
            value = sd[key]
            if value.shape != shape:
                raise CheckpointError(
                    f"{source}: key '{key}' has shape {tuple(value.shape)}, the pretrained model has {tuple(shape)}"
                )
            out[sl].copy_(value.reshape(-1))
        return out

    def unflatten(self, flat: torch.Tensor) -> StateDict:
        """Views of ``flat`` shaped as the original tensors (no copy)."""
        return {key: flat[sl].view(shape) for key, sl, shape in self.items()}

    def view(self, flat: torch.Tensor, key: str) -> torch.Tensor:
        i = self.keys.index(key)
        return flat[..., self.offsets[i]: self.offsets[i] + self.shapes[i].numel()]


def compute_dtype(sd: Mapping[str, torch.Tensor]) -> torch.dtype:
    """float64 when the checkpoint is float64 (tests, references), else float32."""
    return torch.float64 if any(v.dtype == torch.float64 for v in sd.values()) else torch.float32


@dataclass
class TaskVectors:
    """θ_pre and the task vectors Δ_1..Δ_K of K fine-tuned models, as flat tensors.

    ``pretrained`` is ``(N,)``, ``deltas`` is ``(K, N)``; ``template`` keeps the pretrained
    state dict's non-merged tensors (integer buffers, carried keys) and dtypes for
    :meth:`to_state_dict`.
    """

    layout: ParamLayout
    pretrained: torch.Tensor
    deltas: torch.Tensor
    names: list[str]
    template: StateDict = field(repr=False)

    @property
    def K(self) -> int:
        return int(self.deltas.shape[0])

    @property
    def N(self) -> int:
        return self.layout.numel

    @property
    def dtype(self) -> torch.dtype:
        return self.pretrained.dtype

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_state_dicts(
        cls,
        pretrained: Mapping[str, torch.Tensor],
        finetuned: Sequence[Mapping[str, torch.Tensor]] | Sequence[Callable[[], Mapping[str, torch.Tensor]]],
        names: Sequence[str] | None = None,
        sources: Sequence[str] | None = None,
        pretrained_source: str = "pretrained",
        allocate: Callable[[int, int, torch.dtype], torch.Tensor] | None = None,
    ) -> "TaskVectors":
        """Build from state dicts (or zero-argument loaders, called one at a time to bound memory).

        ``allocate(K, N, dtype)`` gives the ``(K, N)`` buffer the task vectors are written into (default:
        memory; :func:`mapped_task_vectors` gives a file)."""
        if len(finetuned) == 0:
            raise TatrError("at least one fine-tuned model is needed")
        K = len(finetuned)
        names = list(names) if names is not None else [f"task{k + 1}" for k in range(K)]
        sources = list(sources) if sources is not None else names
        if len(names) != K or len(sources) != K:
            raise TatrError(f"{K} fine-tuned models but {len(names)} names")
        if len(set(names)) != K:
            raise TatrError(f"task names must be unique, got {names}")
        check_finite(pretrained, pretrained_source)
        dtype = compute_dtype(pretrained)
        layout: ParamLayout | None = None
        pre_flat: torch.Tensor | None = None
        deltas: torch.Tensor | None = None
        carried: frozenset[str] = frozenset()
        for k, item in enumerate(finetuned):
            sd = item() if callable(item) else item
            check_finite(sd, sources[k])
            if layout is None:
                carried = frozenset(
                    key for key in CARRY_IF_MISSING_IN_FINETUNED
                    if key in pretrained and key not in sd
                )
                layout = ParamLayout.from_state_dict(pretrained, exclude=carried)
                pre_flat = layout.flatten(pretrained, dtype, pretrained_source)
                deltas = (allocate or _in_memory)(K, layout.numel, dtype)
            _check_same_keys(pretrained, sd, pretrained_source, sources[k], carried)
            layout.flatten(sd, dtype, sources[k], out=deltas[k])
            deltas[k] -= pre_flat
            del sd
        template = {k: v for k, v in pretrained.items()}
        return cls(layout, pre_flat, deltas, names, template)

    @classmethod
    def from_files(cls, pretrained: str | os.PathLike, finetuned: Sequence[str | os.PathLike],
                   names: Sequence[str] | None = None, pretrained_raw: Mapping[str, torch.Tensor] | None = None
                   ) -> "TaskVectors":
        """Load θ_pre and K fine-tuned checkpoints (any supported format), one file in memory at a time.

        ``pretrained_raw``: θ_pre's file as already read (``read_state_dict``), so it is not read twice."""
        names = list(names) if names is not None else [_stem(p) for p in finetuned]
        if len(set(names)) != len(names):
            names = [f"{n}#{i + 1}" for i, n in enumerate(names)]
        loaders = [(lambda p=p: load_image_encoder(p)) for p in finetuned]
        return cls.from_state_dicts(load_image_encoder(pretrained, pretrained_raw), loaders, names,
                                    [str(p) for p in finetuned], str(pretrained))

    # -- use ---------------------------------------------------------------------------
    def flatten_aux(self, per_task: Sequence[Mapping[str, torch.Tensor]], sources: Sequence[str], what: str) -> torch.Tensor:
        """Stack K auxiliary state dicts (gradients, Fishers) aligned with the task vectors: ``(K, N)``."""
        if len(per_task) != self.K:
            raise TatrError(f"{len(per_task)} {what} files for {self.K} fine-tuned models: give one per model, in the same order")
        out = torch.empty((self.K, self.N), dtype=self.dtype)
        for k, sd in enumerate(per_task):
            check_finite(sd, sources[k])
            self.layout.flatten(sd, self.dtype, sources[k], out=out[k])
        return out

    def subset(self, indices: Sequence[int]) -> "TaskVectors":
        """The task vectors of some tasks only (for leave-one-out merges)."""
        idx = list(indices)
        return TaskVectors(self.layout, self.pretrained, self.deltas[idx], [self.names[i] for i in idx], self.template)

    def to_state_dict(self, theta: torch.Tensor) -> StateDict:
        """Full state dict for flat parameters ``theta``, in the pretrained model's dtypes.

        Tensors outside the layout (integer buffers, carried keys) come from the pretrained model.
        """
        out: StateDict = {}
        merged = self.layout.unflatten(theta)
        for key, value in self.template.items():
            out[key] = merged[key].to(value.dtype) if key in merged else value
        return out


def _in_memory(K: int, N: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty((K, N), dtype=dtype)


#: the task-vector file is verified in blocks of this many bytes (hashed in parallel threads)
BLOCK_BYTES = 64 * 2**20
#: (path, inode, size, mtime) of the task-vector files verified in this process
_VERIFIED: set[tuple] = set()


def block_hashes(path: Path, block: int = BLOCK_BYTES) -> list[str]:
    """SHA-256 of each ``block``-byte block of ``path`` (the last one shorter), hashed in parallel threads
    (``hashlib`` releases the interpreter lock on large buffers)."""
    import hashlib
    import mmap
    from concurrent.futures import ThreadPoolExecutor

    size = path.stat().st_size
    if size == 0:
        return []
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)
        try:
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
                return list(pool.map(lambda start: hashlib.sha256(view[start:start + block]).hexdigest(),
                                     range(0, size, block)))
        finally:
            view.release()


def _identity(path: Path) -> tuple:
    st = path.stat()
    return (str(path), st.st_ino, st.st_size, st.st_mtime_ns)


def _verified(path: Path, meta: dict) -> str | None:
    """None when the file at ``path`` is the one its record describes (checked once per process), else
    what is wrong with it."""
    if path.is_symlink() or not path.is_file():
        return "it is not a regular file"
    if _identity(path) in _VERIFIED:
        return None
    if meta.get("block_bytes") != BLOCK_BYTES or not isinstance(meta.get("sha256"), list):
        return "it has no block hashes (written by an older version)"
    if block_hashes(path) != meta["sha256"]:
        return "its content does not match the hashes recorded when it was built"
    _VERIFIED.add(_identity(path))
    return None


def mapped_task_vectors(path: Path, pretrained: Mapping[str, torch.Tensor],
                        finetuned: Sequence[Callable[[], Mapping[str, torch.Tensor]]], names: Sequence[str],
                        sources: Sequence[str], pretrained_source: str,
                        progress: Callable[[float, str], None] | None = None) -> TaskVectors:
    """Task vectors whose ``(K, N)`` deltas live in the file ``path``, mapped into memory.

    The first call builds the file, reading one fine-tuned model at a time; every later call maps it
    and reads no fine-tuned checkpoint.  Pages of a mapped file are read when used, can be dropped
    by the OS and are shared by every process on the machine that maps the same file: the Ray
    workers on one node hold one copy.  ``path`` must be named by the models' content (a cache key);
    ``<path>.json`` records K, N, the dtype, the names and the SHA-256 of every 64 MiB block, and is
    written last, so a build cut short leaves nothing that is read.

    The file is verified against those hashes the first time a process maps it: a damaged, truncated,
    replaced or linked-over file is rebuilt (with a notice), never served.  Under ``--no-cache``
    (:func:`tatr_core.cache.recompute`) it is rebuilt.  Before a build, the free space is checked and
    the file's blocks are reserved, so a full disk is an error naming the folder, not a crash.
    """
    path = Path(path)
    meta_path = path.with_name(path.name + ".json")
    dtype = compute_dtype(pretrained)
    itemsize = torch.empty((), dtype=dtype).element_size()
    meta = None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        pass
    if (isinstance(meta, dict) and meta.get("names") == list(names) and meta.get("dtype") == str(dtype)
            and not recomputing() and path.exists()
            and path.stat().st_size == meta["K"] * meta["N"] * itemsize):
        problem = _verified(path, meta)
        if problem is None:
            mapped = _map(path, meta, pretrained, names, pretrained_source)
            if mapped is not None:
                return mapped
        else:
            notice(f"the task-vector file {path} is damaged ({problem}); building it again")
    elif path.exists() and meta is not None and not recomputing():
        notice(f"the task-vector file {path} does not match its record; building it again")
    with cache_errors(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        meta_path.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")

    def loader(k: int, load: Callable[[], Mapping[str, torch.Tensor]]):
        def read():
            if progress is not None:
                progress(k / len(finetuned), f"task vectors: reading {sources[k]}")
            return load()
        return read

    def allocate(K: int, N: int, dt: torch.dtype) -> torch.Tensor:
        size = K * N * torch.empty((), dtype=dt).element_size()
        check_space(path.parent, size, f"the task-vector file of {K} tasks × {N:,} parameters",
                    "free space there, or set TATR_CACHE to a disk with room")
        with cache_errors(path.parent, size), open(tmp, "wb") as fh:
            os.posix_fallocate(fh.fileno(), 0, size)  # the blocks exist now: a full disk cannot fault the mapping
        return torch.from_file(str(tmp), shared=True, size=K * N, dtype=dt).view(K, N)

    try:
        tv = TaskVectors.from_state_dicts(
            pretrained, [loader(k, f) for k, f in enumerate(finetuned)], names, sources, pretrained_source,
            allocate=allocate)
        K, N = tv.K, tv.N
        carried = sorted(k for k in CARRY_IF_MISSING_IN_FINETUNED if k in pretrained and k not in tv.layout.keys)
        del tv  # unmaps the file: everything written is in it
        meta = {"K": K, "N": N, "dtype": str(dtype), "names": list(names), "carried": carried,
                "block_bytes": BLOCK_BYTES, "sha256": block_hashes(tmp)}
        with cache_errors(path.parent):
            os.replace(tmp, path)
            write_bytes_atomic(meta_path, json.dumps(meta).encode())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _VERIFIED.add(_identity(path))
    return _map(path, meta, pretrained, names, pretrained_source)


def _map(path: Path, meta: dict, pretrained: Mapping[str, torch.Tensor], names: Sequence[str],
         pretrained_source: str) -> TaskVectors | None:
    """The task vectors of a verified file, mapped (None when its layout does not fit ``pretrained``)."""
    layout = ParamLayout.from_state_dict(pretrained, exclude=frozenset(meta["carried"]))
    if layout.numel != meta["N"]:
        return None
    check_finite(pretrained, pretrained_source)
    pre = layout.flatten(pretrained, compute_dtype(pretrained), pretrained_source)
    deltas = torch.from_file(str(path), shared=False, size=meta["K"] * meta["N"], dtype=compute_dtype(pretrained))
    return TaskVectors(layout, pre, deltas.view(meta["K"], meta["N"]), list(names), dict(pretrained))


def _stem(path: str | os.PathLike) -> str:
    p = os.path.normpath(str(path))
    base = os.path.basename(p)
    stem = base.split(".")[0]
    if stem in ("finetuned", "model", "pytorch_model", "open_clip_model") or os.path.isdir(p) and not stem:
        stem = os.path.basename(os.path.dirname(p)) or stem
    return stem or base


def _check_same_keys(pre: Mapping, ft: Mapping, pre_src: str, ft_src: str, carried: frozenset[str]) -> None:
    mixed = [k for k in carried if k in ft]
    if mixed:
        raise CheckpointError(f"{ft_src}: has '{mixed[0]}' but the first fine-tuned model does not; "
                              "give fine-tuned models of one format")
    only_pre = [k for k in pre if k not in ft and k not in carried]
    only_ft = [k for k in ft if k not in pre]
    if only_pre:
        raise CheckpointError(f"{ft_src}: key '{only_pre[0]}' of the pretrained model ({pre_src}) is missing "
                              f"({len(only_pre)} missing in all); are these checkpoints of the same architecture?")
    if only_ft:
        raise CheckpointError(f"{ft_src}: key '{only_ft[0]}' is not in the pretrained model ({pre_src}) "
                              f"({len(only_ft)} extra in all); are these checkpoints of the same architecture?")
    for key, value in ft.items():
        if value.is_floating_point() != pre[key].is_floating_point():
            raise CheckpointError(f"{ft_src}: key '{key}' is {value.dtype}, the pretrained model has {pre[key].dtype}")
