"""How a run computes: one frozen value, :class:`RunOptions`, read from the environment in one place.

* ``device``: where tensors are computed (``cpu``, ``cuda``, ``cuda:N``; empty: CUDA when there is one);
* ``precision``: the evaluation arithmetic, ``auto`` / ``fp32`` / ``bf16`` (:mod:`tatr_core.evaluate`);
* ``executor``, ``ray_address``, ``workers``: who computes an analysis's points (:mod:`tatr_core.executors`);
* ``cache_root``: the on-disk cache (:mod:`tatr_core.cache`);
* ``jobs``: ``background`` (the dashboard's worker thread) or ``inline`` (on the page: scripted page tests);
* ``zoo``: the zoo the dashboard opens unless its URL or zoo box names another.

:func:`from_environment` is the only place that reads the ``TATR_*`` variables (``TATR_DEVICE``,
``TATR_PRECISION``, ``TATR_EXECUTOR``, ``TATR_RAY_ADDRESS``, ``TATR_RAY_WORKERS``, ``TATR_CACHE``,
``TATR_JOBS``, ``TATR_ZOO``); outside :func:`using` the options follow them.  The options in force are held in a context variable: :func:`current` gives them,
:func:`using` sets them for a block (the CLI runs a command under its flags; a dashboard page run
under its sidebar's precision, and the background jobs it starts inherit them).  Nothing changes
``os.environ``.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .errors import TatrError

PRECISIONS = ("auto", "fp32", "bf16")
EXECUTORS = ("local", "ray")
JOBS = ("background", "inline")
DEFAULT_CACHE = Path(__file__).resolve().parents[1] / "cache"


@dataclass(frozen=True)
class RunOptions:
    device: str = ""
    precision: str = "auto"
    executor: str = "local"
    ray_address: str | None = None
    workers: int | None = None
    cache_root: Path = DEFAULT_CACHE
    jobs: str = "background"
    zoo: str = "mini"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise TatrError(f"unknown precision '{self.precision}': use {', '.join(PRECISIONS)} "
                            "(--precision, TATR_PRECISION)")
        if self.executor not in EXECUTORS:
            raise TatrError(f"unknown executor '{self.executor}': use {' or '.join(EXECUTORS)} "
                            "(--executor, TATR_EXECUTOR)")
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or self.workers < 1):
            raise TatrError(f"the number of Ray workers must be a whole number of at least 1, got {self.workers!r}")
        if self.jobs not in JOBS:
            raise TatrError(f"TATR_JOBS must be one of {', '.join(JOBS)}, got {self.jobs!r}")

    def replace(self, **changes) -> "RunOptions":
        """These options with some changed (``None`` values leave an option as it is)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def worker_environment(self) -> dict[str, str]:
        """The environment that gives another process (a Ray worker) these options through
        :func:`from_environment`."""
        env = {"TATR_CACHE": str(self.cache_root), "TATR_PRECISION": self.precision}
        if self.device:
            env["TATR_DEVICE"] = self.device
        return env


def _workers(raw: str | None) -> int | None:
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise TatrError(f"TATR_RAY_WORKERS must be a whole number, got {raw!r}") from None


def from_environment(environ: os._Environ | dict | None = None) -> RunOptions:
    """The options the ``TATR_*`` environment variables name (the defaults where they are unset)."""
    env = os.environ if environ is None else environ
    cache = env.get("TATR_CACHE")
    return RunOptions(device=env.get("TATR_DEVICE", "").strip(), precision=env.get("TATR_PRECISION") or "auto",
                      executor=env.get("TATR_EXECUTOR") or "local", ray_address=env.get("TATR_RAY_ADDRESS") or None,
                      workers=_workers(env.get("TATR_RAY_WORKERS")),
                      cache_root=Path(cache) if cache else DEFAULT_CACHE, jobs=env.get("TATR_JOBS") or "background",
                      zoo=env.get("TATR_ZOO") or "mini")


VARIABLES = ("TATR_DEVICE", "TATR_PRECISION", "TATR_EXECUTOR", "TATR_RAY_ADDRESS", "TATR_RAY_WORKERS", "TATR_CACHE",
             "TATR_JOBS", "TATR_ZOO")
_FROM_ENV: dict[tuple, RunOptions] = {}  #: the environment's options, by the values of its variables
_CURRENT: contextvars.ContextVar[RunOptions | None] = contextvars.ContextVar("tatr_options", default=None)


def current() -> RunOptions:
    """The options in force: those set by :func:`using` in this context, else the environment's."""
    options = _CURRENT.get()
    if options is not None:
        return options
    seen = tuple(os.environ.get(name) for name in VARIABLES)
    if seen not in _FROM_ENV:
        _FROM_ENV.clear()
        _FROM_ENV[seen] = from_environment()
    return _FROM_ENV[seen]


def set_current(options: RunOptions) -> None:
    """Put ``options`` in force for the rest of this context (a page run; the jobs it starts inherit them)."""
    _CURRENT.set(options)


@contextlib.contextmanager
def using(options: RunOptions | None = None, **changes) -> Iterator[RunOptions]:
    """Run the block under ``options`` (default: the current ones) with ``changes``."""
    options = (options or current()).replace(**changes)
    token = _CURRENT.set(options)
    try:
        yield options
    finally:
        _CURRENT.reset(token)
