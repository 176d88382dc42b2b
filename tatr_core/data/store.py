"""A split's preprocessed images in one memory-mapped cache file, decoded only where used.

The file (``cache/data/<key>.images``) holds a header, the labels, one flag and one CRC-32 per image,
and the images themselves as uint8 (n, 3, S, S) at the model's resolution, in open_clip's evaluation
transform (:mod:`tatr_core.data.images`).  Its space is reserved when it is made (a full disk is an
error before anything is decoded, not a crash later); nothing in it is served until its flag is set:

* :class:`MappedImages` indexes like the uint8 tensor it stands for (``images[idx]``, ``images[a:b]``,
  ``len``, ``shape``); an index whose image is not decoded yet is decoded then (only those: 128
  exemplars or a 200-image sample of a 50,000-image split decode 128 or 200 images), written into the
  file and flagged, so every later use in any process reads it from the page cache.  The processes and
  Ray workers of a node read the same file through that one page cache, by position (``pread``): a
  process's own memory holds the batch it reads, and does not grow with the number of images.
* many missing images (a full evaluation, ``zoo prepare``) are decoded by a pool of worker processes, on
  every core, each writing its images straight into the file, with a progress bar and the time left;
  an interruption (Ctrl-C, a killed process) loses only the images in flight, and the next use goes on
  from there.
* an image is written before its flag is set, so a killed writer leaves at most unflagged work, which is
  decoded again; each image's CRC-32 is checked the first time a process reads it, so a damaged page is
  decoded again too (with a notice), and a cut or foreign file is rebuilt, never served.
"""
from __future__ import annotations

import json
import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..cache import notice
from ..errors import TatrError
from ..paths import check_space
from .images import preprocess
from .sources import Source

MAGIC = b"TATRIMG1"
HEADER = 4096
ALIGN = 4096
#: at most this many missing images are decoded in the process that asks; more go to the worker pool
IN_PROCESS = 256
#: images per task a worker is given at a time
CHUNK = 64
#: from this many missing images on, worker processes join the threads (below, their start-up costs more than
#: they save) ...
POOL_MIN = 2048
#: ... when there are more cores than this.  One more thread than cores keeps them busy while others hold the
#: GIL; a worker process first spends about 3 s importing the package, which on 2 cores lost to threads alone
#: (BENCHMARKS.md, bench/data_load.py for the threads' throughput)
THREADS_SUFFICE = 2


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def layout(n: int, size: int) -> dict[str, int]:
    """Byte offsets of the file's parts for ``n`` images of ``size`` pixels."""
    labels = HEADER
    flags = _align(labels + 8 * n)
    crcs = _align(flags + n)
    images = _align(crcs + 4 * n)
    return {"labels": labels, "flags": flags, "crcs": crcs, "images": images,
            "total": images + n * 3 * size * size}


def _crc(image: np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(image)).cast("B")) & 0xFFFFFFFF


class _Views:
    """The file's small parts (labels, flags, CRCs) as numpy maps, and its images read and written by position
    (``pread`` / ``pwrite``): the page cache is shared by every process, but a process that has read a whole
    split through it holds none of those pages itself, so its memory stays flat however many images it reads."""

    def __init__(self, path: Path, n: int, size: int, writable: bool = True):
        parts = layout(n, size)
        mode = "r+" if writable else "r"
        self.n, self.size, self.start = n, size, parts["images"]
        self.per = 3 * size * size
        self.labels = np.memmap(path, np.int64, mode, parts["labels"], (n,))
        self.flags = np.memmap(path, np.uint8, mode, parts["flags"], (n,))
        self.crcs = np.memmap(path, np.uint32, mode, parts["crcs"], (n,))
        self.fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)

    def __del__(self):
        fd = getattr(self, "fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except (OSError, TypeError):  # TypeError: at interpreter exit os may be gone
                pass

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Images ``rows`` (sorted or not) as a new (len, 3, S, S) array; runs of consecutive rows in one read each."""
        out = np.empty((len(rows), 3, self.size, self.size), dtype=np.uint8)
        if not len(rows):
            return out
        flat = out.reshape(len(rows), self.per)
        breaks = np.nonzero(np.diff(rows) != 1)[0] + 1
        for a, b in zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [len(rows)]])):
            view, offset = memoryview(flat[a:b]).cast("B"), self.start + int(rows[a]) * self.per
            while len(view):
                got = os.preadv(self.fd, [view], offset)
                if got <= 0:
                    raise OSError(f"the preprocessed-image file ended early at byte {offset:,}")
                view, offset = view[got:], offset + got
        return out

    def write(self, i: int, image: np.ndarray) -> None:
        data = memoryview(np.ascontiguousarray(image)).cast("B")
        offset = self.start + i * self.per
        while len(data):
            put = os.pwrite(self.fd, data, offset)
            data, offset = data[put:], offset + put


def _write(views: _Views, done: list[tuple[int, np.ndarray]]) -> None:
    """Images, then their CRCs, then their flags: a flag never covers unwritten data (the page cache is one for
    every process, and a killed writer's finished writes stay in it)."""
    for i, image in done:
        views.write(i, image)
        views.crcs[i] = _crc(image)
    for i, _ in done:
        views.flags[i] = 1


def _decode(views: _Views, source: Source, size: int, indices) -> int:
    """Decode those of ``indices`` not yet flagged and write them into the file; returns how many were asked."""
    todo = [int(i) for i in indices if not views.flags[i]]
    if todo:
        encoded = source.encoded(todo)
        _write(views, [(i, preprocess(e, size, source.describe(i))) for i, e in zip(todo, encoded)])
    return len(indices)


def _decode_into(path: str, n: int, size: int, source: Source, indices: list[int]) -> int:
    """A worker process's task: :func:`_decode` into the file at ``path``, mapped in this process."""
    return _decode(_Views(Path(path), n, size), source, size, indices)


def workers() -> int:
    """The decoding pool's size: every core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class MappedImages:
    """The preprocessed images of one split (see the module docstring); indexes like a uint8 tensor."""

    dtype = torch.uint8
    device = torch.device("cpu")

    def __init__(self, path: Path, source: Source, size: int, labels=None):
        """``labels``: the split's labels, or a callable giving them (read only when the file is made)."""
        self.path, self.source, self.size = Path(path), source, int(size)
        self.n = len(source)
        self._open(labels)
        self._checked = np.zeros(self.n, dtype=bool)  # images whose CRC this process has checked

    # -- the file -------------------------------------------------------------------------------
    def _header(self) -> dict:
        return {"n": self.n, "size": self.size, "file": self.path.name}

    def _valid(self) -> bool:
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(HEADER)
            if not head.startswith(MAGIC):
                return False
            meta = json.loads(head[len(MAGIC):].split(b"\0", 1)[0])
            return meta == self._header() and self.path.stat().st_size == layout(self.n, self.size)["total"]
        except (OSError, ValueError):
            return False

    def _create(self, labels: np.ndarray) -> None:
        """A new file beside the final name, its space reserved, then renamed into place."""
        total = layout(self.n, self.size)["total"]
        check_space(self.path.parent, total, f"the preprocessed images of {self.source.where} ({self.n:,} images)",
                    "free space there, or point TATR_CACHE at a disk with room")
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                head = MAGIC + json.dumps(self._header()).encode()
                fh.write(head + b"\0" * (HEADER - len(head)))
                fh.truncate(total)
                try:
                    os.posix_fallocate(fh.fileno(), 0, total)
                except (AttributeError, OSError):
                    pass  # the file system cannot reserve: the space check above stands
            views = _Views(tmp, self.n, self.size)
            views.labels[:] = labels
            views.labels.flush()
            del views
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def _open(self, labels: np.ndarray | None) -> None:
        if not self._valid():
            if self.path.exists():
                notice(f"the preprocessed images at {self.path} were cut short or are not this split's: rebuilt")
            self._create(np.asarray(self.source.labels() if labels is None else labels() if callable(labels) else labels))
        self._views = _Views(self.path, self.n, self.size)

    def __getstate__(self):  # another process maps the same file (never a copy of the images)
        return {"path": self.path, "source": self.source, "size": self.size, "n": self.n}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._views = _Views(self.path, self.n, self.size)
        self._checked = np.zeros(self.n, dtype=bool)

    # -- the tensor it stands for ----------------------------------------------------------------
    def __getattr__(self, name: str):
        """Any other tensor method (``float``, ``clone``, ``numel``, ...) acts on the whole split, decoded."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.to(), name)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        """A torch function given a mapped split gets the whole split, decoded (``torch.equal(images, t)``)."""
        def whole(x):
            return x.to() if isinstance(x, MappedImages) else x
        return func(*[whole(a) for a in args], **{k: whole(v) for k, v in (kwargs or {}).items()})

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.n, 3, self.size, self.size))

    def __len__(self) -> int:
        return self.n

    def labels(self) -> torch.Tensor:
        return torch.from_numpy(np.array(self._views.labels))

    def decoded(self) -> int:
        """How many images are decoded (in the file, for every process)."""
        return int(self._views.flags.sum())

    def _indices(self, idx) -> tuple[np.ndarray, bool]:
        """(the indices asked for, as int64; whether a single image was asked for)."""
        if isinstance(idx, (int, np.integer)):
            i = int(idx) + (self.n if idx < 0 else 0)
            if not 0 <= i < self.n:
                raise IndexError(f"image {idx} of {self.n}")
            return np.asarray([i]), True
        if isinstance(idx, slice):
            return np.arange(self.n)[idx], False
        if isinstance(idx, torch.Tensor):
            idx = idx.cpu().numpy()
        arr = np.asarray(idx)
        if arr.dtype == bool:
            return np.nonzero(arr)[0], False
        arr = arr.astype(np.int64).reshape(-1)
        return np.where(arr < 0, arr + self.n, arr), False

    def __getitem__(self, idx) -> torch.Tensor:
        rows, single = self._indices(idx)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.n):
            raise IndexError(f"image {int(rows.min() if rows.min() < 0 else rows.max())} of {self.n}")
        self.ensure(rows)
        out = self._views.read(rows)
        unchecked = np.nonzero(~self._checked[rows])[0]
        if len(unchecked):  # the first read of an image in this process: its CRC, and a damaged one decoded again
            bad = [j for j in unchecked if _crc(out[j]) != int(self._views.crcs[rows[j]])]
            if bad:
                notice(f"{len(bad)} preprocessed image(s) of {self.source.where} in {self.path} did not match their "
                       "checksum (a damaged file): decoded again")
                self._views.flags[rows[bad]] = 0
                self.ensure(rows[bad])
                out[bad] = self._views.read(rows[bad])
            self._checked[rows] = True
        return torch.from_numpy(out[0] if single else out)

    def to(self, *args, **kwargs) -> torch.Tensor:
        """Every image, decoded first when needed, as a tensor (``Tensor.to``'s arguments).  To a GPU it goes in
        chunks, so that the host never holds the whole split on the way."""
        target = torch.empty(0).to(*args, **kwargs) if args or kwargs else None
        if target is None or target.device.type == "cpu":
            whole = self[:]
            return whole.to(*args, **kwargs) if args or kwargs else whole
        self.ensure(np.arange(self.n))
        out = torch.empty(self.shape, dtype=self.dtype, device=target.device)
        for a in range(0, self.n, 1024):
            out[a:a + 1024] = self[a:a + 1024].to(target.device)
        return out.to(*args, **kwargs)

    # -- decoding ---------------------------------------------------------------------------------
    def ensure(self, rows: Sequence[int] | np.ndarray) -> None:
        """Decode the images among ``rows`` that are not yet."""
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        missing = rows[~self._views.flags[rows].astype(bool)] if len(rows) else rows
        if len(missing) > IN_PROCESS:
            self.decode_all(missing)
        elif len(missing):
            _decode(self._views, self.source, self.size, missing)

    def decode_all(self, rows: np.ndarray | None = None, progress=None, jobs: int | None = None) -> int:
        """Decode ``rows`` (default: every image not yet decoded) on ``jobs`` cores (default: every one), with a
        progress bar and the time left; returns how many were decoded.  Interrupted, the images finished so far
        stay decoded.

        ``jobs + 1`` threads of this process decode from the end of the list (Pillow and zlib release the GIL
        while they work, and threads start at once); for a long list on more than :data:`THREADS_SUFFICE`
        cores, ``jobs - 1`` worker processes (fresh interpreters, not forks of a process that holds threads
        and torch's thread pools) also take chunks from the front once they have started, about 3 s later,
        and each chunk is done by whichever side reaches it first."""
        import threading
        from concurrent.futures import ThreadPoolExecutor

        from tqdm import tqdm

        if rows is None:
            rows = np.nonzero(~self._views.flags.astype(bool))[0]
        rows = [int(i) for i in rows]
        if not rows:
            return 0
        jobs = max(1, jobs or workers())
        chunks = [rows[s:s + CHUNK] for s in range(0, len(rows), CHUNK)]
        label = f"decoding {len(rows):,} images of {self.source.where}"
        bar = tqdm(total=len(rows), desc=label, unit="img", leave=False, disable=progress is not None, mininterval=1)
        lock = threading.Lock()
        state = {"done": 0, "next": len(chunks) - 1, "stop": False}

        def finished(k: int) -> None:
            with lock:
                state["done"] += k
                bar.update(k)
                if progress is not None:
                    progress(state["done"] / len(rows), f"{label}: {state['done']:,} done")

        pool = None
        if jobs > THREADS_SUFFICE and len(rows) >= POOL_MIN:
            pool = ProcessPoolExecutor(max_workers=jobs - 1, mp_context=get_context("spawn"))
        futures = [pool.submit(_decode_into, str(self.path), self.n, self.size, self.source, c) for c in chunks] \
            if pool else []

        def from_the_back() -> None:
            while not state["stop"]:
                with lock:
                    k = state["next"]
                    state["next"] -= 1
                if k < 0 or (futures and not futures[k].cancel()):
                    return  # everything is taken; from here on the processes have it
                _decode(self._views, self.source, self.size, chunks[k])  # this process's own map of the file
                finished(len(chunks[k]))

        threads = ThreadPoolExecutor(max_workers=jobs + 1)
        try:
            for f in [threads.submit(from_the_back) for _ in range(jobs + 1)]:
                f.result()
            for future in futures:
                if not future.cancelled():
                    finished(future.result())
        except BaseException:  # a bad image, Ctrl-C: the others stop after the chunk in hand (it is kept)
            state["stop"] = True
            for f in futures:
                f.cancel()
            raise
        finally:
            threads.shutdown(wait=True)
            bar.close()
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        return len(rows)
