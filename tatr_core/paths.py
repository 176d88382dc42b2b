"""Checks on the paths a user names, made before anything is read, computed or written.

* an input must be a regular file or a folder (a FIFO would block forever, a device never ends);
* an output must be creatable and writable, must not be a folder where a file is wanted (or the
  reverse), and must not be one of the inputs: not the same path, not a symlink to one, not a hard
  link to one — writing there would destroy the input;
* a path longer than the system allows (4,096 bytes, 255 per name) is refused up front, not by a
  traceback from the first call that touches it;
* :func:`output_errors` turns what the operating system still refuses at write time (a full disk,
  a read-only mount) into a :class:`TatrError` naming the flag, the folder and the space needed,
  while the atomic writers leave any existing file intact and no temporary file behind;
* :func:`safe_name` is the one way a name read from a file (a manifest's task) becomes part of a
  file name: separators, ``..``, absolute paths and control characters are refused.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .errors import TatrError, shown

#: the system's limits on a path and on one name in it (Linux: PATH_MAX, NAME_MAX)
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
#: the longest task name that becomes part of a file name
MAX_TASK_NAME = 100


def check_length(path: str | os.PathLike, what: str = "path") -> Path:
    """``path`` as a Path, refused (naming the limit) when it or one of its names is longer than the system allows."""
    text = os.fsencode(os.fspath(path))
    if len(text) > MAX_PATH_BYTES:
        raise TatrError(f"the {what} is {len(text):,} bytes long; the limit is {MAX_PATH_BYTES:,}: give a shorter one")
    long = [part for part in text.split(b"/") if len(part) > MAX_NAME_BYTES]
    if long:
        raise TatrError(f"the {what} {shown(os.fsdecode(long[0]), 40)} has a name of {len(long[0]):,} bytes; the "
                        f"limit is {MAX_NAME_BYTES} per name: give a shorter one")
    return Path(os.fsdecode(text))


def safe_name(name: str, what: str = "task") -> str:
    """``name`` (read from a file: a manifest's task name), checked to be usable as part of a file name in a
    folder the user gave: no separator, no ``..``, not absolute, no control character, not empty, at most
    :data:`MAX_TASK_NAME` characters.  Refused with an error naming it; never changed silently."""
    text = str(name)
    problem = None
    if not text.strip():
        problem = "is empty"
    elif len(text) > MAX_TASK_NAME:
        problem = f"is {len(text):,} characters long (the limit is {MAX_TASK_NAME})"
    elif "/" in text or "\\" in text or os.sep in text:
        problem = "holds a path separator"
    elif text in (".", "..") or text.startswith("."):
        problem = "starts with a dot"
    elif any(ord(c) < 32 or ord(c) == 127 for c in text):
        problem = "holds a control character"
    if problem is not None:
        raise TatrError(f"{what} name {shown(text, 40)} {problem}: it becomes part of file names, so give it a plain "
                        "name (letters, digits, spaces, - and _)")
    return text


def inside(folder: str | os.PathLike, name: str) -> Path:
    """``folder / name``, refused unless it stays inside ``folder`` (after resolving any link)."""
    folder = Path(folder)
    path = folder / name
    if not path.resolve().is_relative_to(folder.resolve()):
        raise TatrError(f"{shown(name, 40)} would be written outside {folder}; nothing was written")
    return path


def mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB" if n < 10 * 2**30 else f"{n / 2**30:,.1f} GiB"


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes free on the file system that holds ``path`` (or its nearest existing folder)."""
    path = Path(path)
    anchor = path if path.is_dir() else _existing_ancestor(path)
    try:
        return shutil.disk_usage(anchor).free
    except OSError:
        return 0


def space_needed(path: str | os.PathLike, needed: int | None) -> str:
    """"; it needs about X and Y are free there" for a message, or "" when the size is not known."""
    if not needed:
        return ""
    return f"; it needs about {mib(needed)} and {mib(free_bytes(path))} are free there"


def check_space(path: str | os.PathLike, needed: int, what: str, fix: str) -> None:
    """Refuse, before anything is written, a write of ``needed`` bytes where fewer are free."""
    free = free_bytes(path)
    if free < needed:
        raise TatrError(f"{what} needs about {mib(needed)} in {Path(path).parent if not Path(path).is_dir() else path}, "
                        f"and {mib(free)} are free there: {fix}; nothing was written")


def check_input(path: str | os.PathLike, what: str = "input") -> Path:
    """``path`` as a Path, refused unless it is an existing regular file or folder."""
    path = check_length(path, what)
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
    path = check_length(path, f"{flag} path")
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
    path = check_length(path, f"{flag} path")
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
def refusals(describe: Callable[[str], str]) -> Iterator[None]:
    """What the operating system refuses inside the block (an ``OSError``: a full disk, a read-only mount)
    as a :class:`TatrError` saying ``describe(reason)``."""
    try:
        yield
    except TatrError:
        raise
    except OSError as exc:
        raise TatrError(describe(exc.strerror or type(exc).__name__)) from None


def output_errors(flag: str, path: str | os.PathLike, needed: int | None = None):
    """A refusal while writing ``path`` as an error naming the flag, the folder and (when ``needed``
    bytes are known) the space it takes."""
    return refusals(lambda reason: f"{flag} {path}: cannot write it in {Path(path).parent} ({reason})"
                                   f"{space_needed(path, needed)}; nothing was replaced. Choose a writable location "
                                   "with free space")
