"""The on-disk cache under ``cache/`` (git-ignored; ``$TATR_CACHE`` or :class:`tatr_core.options.RunOptions`
``cache_root`` moves it): atomic writes, and records that are verified when read back.

Keys come from :mod:`tatr_core.keys` (one :class:`~tatr_core.keys.Spec` per computation); this module
only stores.  Every write goes to a temporary name in the same folder and is renamed into place, so
an interrupted run never leaves a half-written entry behind.

**Records** (the JSON results of evaluations and analyses) are written in an envelope that names the
key they were computed for and the SHA-256 of their content (:func:`store_record`).  Reading one back
(:func:`load_record`) checks both, and the record's shape: an entry that was edited, truncated, copied
from another key, or is not a record at all is never served; it is treated as missing (recomputed and
rewritten), with a one-line notice.

**Tensors** (gradients, Fishers, Grams, learned modules) are safetensors files whose metadata records
the SHA-256 of their content (:func:`store_tensors`); they are verified when first read in a process
(:func:`load_tensors`), and a mismatch is recomputed.  Large mapped files verify block by block
(:mod:`tatr_core.vectors`).

A cache that cannot be written (a full disk, a read-only folder, ``TATR_CACHE`` naming a file) is an
error naming the folder and the space needed (:func:`cache_errors`), never a traceback; a failed
write leaves no temporary file behind.

``use_cache=False`` (``--no-cache``) means *recompute everything the result depends on*: the
functions that take it run under :func:`recompute`, which makes every cache read inside them
(gradients, Fishers, Grams, learned coefficients, Surgery modules, task-vector files, ...) miss, so
the fresh values replace the stored ones.  Zoos and preprocessed images are inputs, keyed by their
content, and are not recomputed.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from . import options
from .errors import TatrError
from .paths import refusals, space_needed

LOG = logging.getLogger("tatr_core")
_RECOMPUTE: contextvars.ContextVar[bool] = contextvars.ContextVar("tatr_recompute", default=False)


def root() -> Path:
    """The cache root in force (:func:`tatr_core.options.current`)."""
    return options.current().cache_root


@contextlib.contextmanager
def recompute() -> Iterator[None]:
    """Inside this block every cache read misses: everything is computed afresh (and stored)."""
    token = _RECOMPUTE.set(True)
    try:
        yield
    finally:
        _RECOMPUTE.reset(token)


def recomputing() -> bool:
    return _RECOMPUTE.get()


def honours_no_cache(fn: Callable) -> Callable:
    """Decorator for functions with a ``use_cache`` keyword: ``use_cache=False`` runs them under
    :func:`recompute`, so nothing they depend on is read from the cache either."""
    @functools.wraps(fn)
    def wrapper(*args: Any, use_cache: bool = True, **kwargs: Any) -> Any:
        if use_cache:
            return fn(*args, use_cache=True, **kwargs)
        with recompute():
            return fn(*args, use_cache=False, **kwargs)
    return wrapper


def digest(obj: Any, length: int = 16) -> str:
    """Stable hash of a JSON-able object (dict keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def cache_errors(path: str | os.PathLike, needed: int | None = None):
    """What the system refuses while the cache is written at ``path`` (a full disk, a read-only folder),
    as an error naming the folder and, when ``needed`` bytes are known, the space it takes."""
    return refusals(lambda reason: f"the cache cannot be written at {path} ({reason}){space_needed(path, needed)}: "
                                   f"free space there, or set TATR_CACHE to a writable folder with room (the cache root "
                                   f"is {root()}); nothing was left half-written")


def cache_dir(folder: str, *parts: str) -> Path:
    """A folder of the cache (made when missing).  A file standing where one of the cache's own folders
    belongs is removed, with a notice; a cache root that is a file, or cannot be written, is an error."""
    base = root()
    path = base.joinpath(folder, *parts)
    if path.is_dir():
        return path
    if base.exists() and not base.is_dir():
        raise TatrError(f"the cache root {base} is a file, not a folder: set TATR_CACHE to a folder (it is created "
                        "when missing)")
    for depth in range(1, len(parts) + 2):  # inside the root: the cache's own folders
        part = base.joinpath(folder, *parts[:depth - 1])
        if (part.is_symlink() and not part.exists()) or (part.exists() and not part.is_dir()):
            notice(f"{part} is not a folder of the cache; removing it")
            part.unlink()
    with cache_errors(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


def _clear(path: Path) -> None:
    """Remove what stands at ``path`` where a file is to be written (a folder left there, say)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a unique temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:80]}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, json.dumps(obj, indent=1).encode())  # insertion order: task order is meaningful


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # missing or corrupt: recompute


def content_hash(record: Any) -> str:
    """SHA-256 of a record's canonical JSON (keys sorted): what its envelope records."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def store_record(path: Path, key: str, record: Any, about: dict | None = None) -> None:
    """Write ``record`` to ``path`` in its envelope: the key it was computed for and its content hash."""
    envelope = {"key": key, "sha256": content_hash(record), **({"spec": about} if about else {}), "record": record}
    data = json.dumps(envelope, indent=1).encode()
    with cache_errors(path.parent, len(data)):
        _clear(path)
        write_bytes_atomic(path, data)


def notice(message: str) -> None:
    """A one-line notice (the CLI prints it as ``warning: ...``, the dashboard's log keeps it)."""
    LOG.warning(message)


def load_record(path: Path, key: str, check: Callable[[Any], bool] | None = None) -> Any | None:
    """The record stored at ``path`` for ``key``, verified; None when it is missing, damaged or
    everything is being recomputed.  A damaged entry (not an envelope, another key, a content hash
    that does not match, a record of the wrong shape per ``check``) is named in a notice and left
    to be overwritten by the recomputed one."""
    if recomputing():
        return None
    if not path.exists() and not path.is_symlink():
        return None
    envelope = read_json(path) if path.is_file() else None
    problem = None
    if not isinstance(envelope, dict) or set(envelope) - {"key", "sha256", "spec", "record"} \
            or not {"key", "sha256", "record"} <= set(envelope):
        problem = "not a record this program wrote"
    elif envelope["key"] != key:
        problem = "it belongs to another computation"
    elif envelope["sha256"] != content_hash(envelope["record"]):
        problem = "its content does not match the hash recorded when it was written"
    elif check is not None and not check(envelope["record"]):
        problem = "its record has the wrong shape"
    if problem is not None:
        notice(f"cache entry {path} is damaged ({problem}); computing it again")
        return None
    return envelope["record"]


def tensor_hash(tensors: dict) -> str:
    """SHA-256 over a dict of tensors: names, dtypes, shapes and bytes, in name order."""
    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(memoryview(t.view(torch.uint8).reshape(-1).numpy()))
    return h.hexdigest()


#: (path, inode, size, mtime) of the tensor files verified in this process
_VERIFIED: set[tuple] = set()


def _identity(path: Path) -> tuple:
    st = path.stat()
    return (str(path), st.st_ino, st.st_size, st.st_mtime_ns)


def store_tensors(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    """Cache ``tensors`` in the safetensors file ``path``, their content hash in its metadata."""
    from .checkpoints import save_safetensors

    needed = sum(t.numel() * t.element_size() for t in tensors.values())
    with cache_errors(path.parent, needed):
        _clear(path)
        save_safetensors(tensors, path, metadata={**(metadata or {}), "tatr_sha256": tensor_hash(tensors)})
    _VERIFIED.add(_identity(path))
    return path


def load_tensors(path: Path) -> dict | None:
    """The tensors cached at ``path``, verified against the hash written with them (once per process);
    None, with a notice, when the entry is damaged (then recomputed)."""
    from safetensors import safe_open

    from .checkpoints import read_state_dict

    if path.is_symlink() or not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as fh:
            recorded = (fh.metadata() or {}).get("tatr_sha256")
        tensors = read_state_dict(path)
    except Exception:  # a truncated or foreign file
        recorded, tensors = None, None
    if tensors is not None and _identity(path) in _VERIFIED:
        return tensors
    if tensors is None or recorded is None or recorded != tensor_hash(tensors):
        notice(f"cache entry {path} is damaged (its content does not match the hash written with it); "
               "computing it again")
        return None
    _VERIFIED.add(_identity(path))
    return tensors


def cached_tensors(path: Path, compute: Callable[[], dict], use_cache: bool = True) -> dict:
    """A dict of tensors kept in the safetensors file ``path``: read and verified when present (a damaged
    entry is recomputed, never served), else ``compute()`` and store the result."""
    if use_cache and not recomputing() and (tensors := load_tensors(path)) is not None:
        return tensors
    tensors = compute()
    if use_cache:
        store_tensors(path, tensors)
    return tensors


def publish_dir(tmp: Path, final: Path) -> Path:
    """Move a fully written temporary folder into place (replacing nothing if another run won)."""
    try:
        os.replace(tmp, final)
    except OSError:
        if (final / "COMPLETE").exists():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
    return final
