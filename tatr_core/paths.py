"""Checks on the paths a user names, made before anything is read, computed or written.

* an input must be a regular file or a folder (a FIFO would block forever, a device never ends);
* an output must be creatable and writable, must not be a folder where a file is wanted (or the
  reverse), and must not be one of the inputs: not the same path, not a symlink to one, not a hard
  link to one — writing there would destroy the input;
* :func:`output_errors` turns what the operating system still refuses at write time (a full disk,
  a read-only mount) into a :class:`TatrError` naming the flag, while the atomic writers leave any
  existing file intact.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterable, Iterator

from .errors import TatrError


def check_input(path: str | os.PathLike, what: str = "input") -> Path:
    """``path`` as a Path, refused unless it is an existing regular file or folder."""
    path = Path(path)
    if not path.exists():
        raise TatrError(f"{path}: no such file or folder")
    if not (path.is_file() or path.is_dir()):
        raise TatrError(f"{path}: not a regular file or folder (a FIFO, socket or device?); give the {what} as a file")
    return path


def _files_of(path: Path) -> list[Path]:
    """The files an input path stands for: itself, or the files directly inside a model folder."""
    if path.is_dir():
        return [p for p in path.iterdir() if p.is_file()]
    return [path] if path.exists() else []


def _existing_ancestor(path: Path) -> Path:
    for parent in path.absolute().parents:
        if parent.exists():
            return parent
    return Path("/")


def _check_creatable(path: Path, flag: str) -> None:
    anchor = _existing_ancestor(path)
    if not anchor.is_dir():
        raise TatrError(f"{flag} {path}: '{anchor}' is a file, so nothing can be created under it; choose another path")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise TatrError(f"{flag} {path}: the folder '{anchor}' is not writable; choose a folder you can write to")


def check_output_file(path: str | os.PathLike, flag: str = "--out", inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """An output file that can be written and is none of ``inputs`` (path, symlink or hard link)."""
    path = Path(path)
    if path.is_dir():
        raise TatrError(f"{flag} {path} is a folder; give a file name")
    if path.exists() and not path.is_file():
        raise TatrError(f"{flag} {path} is not a regular file (a FIFO, socket or device?); give a file name")
    if path.exists():
        for given in inputs:
            for f in _files_of(Path(given)):
                if os.path.samefile(path, f):
                    raise TatrError(f"{flag} {path} is the input {given}"
                                    + ("" if Path(given) == path else f" (the same file as {f})")
                                    + ": writing there would destroy it; choose another output file")
        if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK | os.X_OK):
            raise TatrError(f"{flag} {path}: not writable (the file or its folder); choose another output file")
    else:
        _check_creatable(path, flag)
    return path


def check_output_dir(path: str | os.PathLike, flag: str = "--out", inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """An output folder: an existing writable folder, or one that can be created."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise TatrError(f"{flag} {path} is a file; give a folder (it is created when missing)")
        if not os.access(path, os.W_OK | os.X_OK):
            raise TatrError(f"{flag} {path}: the folder is not writable; choose a folder you can write to")
        for given in inputs:
            if Path(given).is_dir() and os.path.samefile(path, given):
                raise TatrError(f"{flag} {path} is the input folder {given}; choose another output folder")
    else:
        _check_creatable(path, flag)
    return path


@contextlib.contextmanager
def output_errors(flag: str, path: str | os.PathLike) -> Iterator[None]:
    """Report an operating-system refusal while writing ``path`` as a :class:`TatrError`."""
    try:
        yield
    except TatrError:
        raise
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise TatrError(f"{flag} {path}: cannot write it ({reason}); nothing was replaced. "
                        "Choose a writable location with free space") from exc
