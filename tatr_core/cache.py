"""Content-addressed on-disk cache under ``cache/`` (git-ignored).

Keys are hashes of JSON-able descriptions (a zoo's recipe, a method and its parameters, ...);
every write goes to a temporary name in the same folder and is renamed into place, so an
interrupted run never leaves a half-written entry behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

CACHE_ROOT = Path(os.environ.get("TATR_CACHE", Path(__file__).resolve().parents[1] / "cache"))


def digest(obj: Any, length: int = 16) -> str:
    """Stable hash of a JSON-able object (dict keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def cache_dir(*parts: str) -> Path:
    path = CACHE_ROOT.joinpath(*parts)
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


def cached_tensors(path: Path, compute: Callable[[], dict], use_cache: bool = True) -> dict:
    """A dict of tensors kept in the safetensors file ``path``: read it when present and readable
    (a damaged entry is removed and recomputed), else ``compute()`` and store the result."""
    from .checkpoints import read_state_dict, save_safetensors

    if use_cache and path.exists():
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
