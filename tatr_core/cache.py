"""Content-addressed on-disk cache under ``cache/`` (git-ignored; ``$TATR_CACHE`` moves it).

Keys are hashes of JSON-able descriptions (a zoo's recipe, a method and its parameters, ...),
under a folder per kind of entry that carries the kind's schema version (:data:`SCHEMA`):
bump a kind's version whenever what it computes changes meaning, and no older entry is found
again.  Every write goes to a temporary name in the same folder and is renamed into place, so
an interrupted run never leaves a half-written entry behind.

``use_cache=False`` (``--no-cache``) means *recompute everything the result depends on*: the
functions that take it run under :func:`recompute`, which makes every cache read inside them
(gradients, Fishers, Grams, learned coefficients, Surgery modules, ...) miss, so the fresh
values replace the stored ones.  Zoos and preprocessed images are inputs, keyed by their
content (recipe hash, file sizes and times), and are not recomputed.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

CACHE_ROOT = Path(os.environ.get("TATR_CACHE", Path(__file__).resolve().parents[1] / "cache"))

#: Schema version of each kind of entry (the first part of a :func:`cache_dir` path).  Bump one
#: when the computation behind that kind changes meaning; its old entries are then never read.
SCHEMA = {
    "zoos": 1,      # built-in zoos (the key is also a hash of the recipe)
    "data": 1,      # preprocessed manifest images
    "grads": 1,     # E|∇L_k| and E∇L_k at θ_pre
    "fisher": 1,    # diagonal Fishers
    "regmean": 1,   # RegMean input Grams
    "vectors": 1,   # a manifest zoo's (K, N) task vectors, as a file mapped into memory
    "results": 3,   # evaluations, analyses, learned coefficients, Surgery modules (3: TIES sums, C.4 signed variants)
}

_RECOMPUTE: contextvars.ContextVar[bool] = contextvars.ContextVar("tatr_recompute", default=False)


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


def cache_dir(kind: str, *parts: str) -> Path:
    """The folder of one kind of entry (a key of :data:`SCHEMA`), versioned: ``<root>/<kind>-v<N>/...``."""
    if kind not in SCHEMA:
        raise KeyError(f"unknown cache kind '{kind}'; add it to cache.SCHEMA")
    path = CACHE_ROOT.joinpath(f"{kind}-v{SCHEMA[kind]}", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a unique temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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


def lookup_json(path: Path) -> Any | None:
    """A cached JSON result; None when it is missing, corrupt, or everything is being recomputed."""
    return None if recomputing() else read_json(path)


def cached_tensors(path: Path, compute: Callable[[], dict], use_cache: bool = True) -> dict:
    """A dict of tensors kept in the safetensors file ``path``: read it when present and readable
    (a damaged entry is removed and recomputed), else ``compute()`` and store the result."""
    from .checkpoints import read_state_dict, save_safetensors

    if use_cache and not recomputing() and path.exists():
        try:
            return read_state_dict(path)
        except Exception:
            path.unlink(missing_ok=True)
    tensors = compute()
    if use_cache:
        save_safetensors(tensors, path)
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
