"""Every test run gets a private, empty cache (``$TATR_CACHE``), so no test can pass on a result
that older code left in the project's ``cache/``.  The micro zoo is built once per run.

The suite runs in parallel processes (pytest-xdist, ``-n`` in ``pyproject.toml``): each worker has its
own private cache, and their ``zoos`` folders are one folder of the run, so the micro zoo is built
once (under a lock) and loaded by every worker.

``TATR_TEST_CACHE=/some/folder`` reuses a cache across runs while developing; it is never the
default.
"""
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

import pytest

_PRIVATE = not os.environ.get("TATR_TEST_CACHE")
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _PRIVATE and not _WORKER:  # the run's first process: the zoos folder its workers share
    os.environ["TATR_TEST_ZOOS"] = tempfile.mkdtemp(prefix="tatr-test-zoos-")
_OWNS_ZOOS = _PRIVATE and not _WORKER
_CACHE = tempfile.mkdtemp(prefix="tatr-test-cache-") if _PRIVATE else os.environ["TATR_TEST_CACHE"]
if _PRIVATE:
    os.symlink(os.environ["TATR_TEST_ZOOS"], Path(_CACHE) / "zoos")
os.environ["TATR_CACHE"] = _CACHE  # the run options read it (tatr_core.options)
# Scripted page tests (AppTest) compute on the page; test_app.py tests the background jobs themselves, and
# the browser tests serve the dashboard as users get it, with background jobs.
os.environ["TATR_JOBS"] = "inline"
if _WORKER:  # several test processes share the cores: one thread each
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


def pytest_report_header(config):
    return f"TATR_CACHE={_CACHE} ({'private to this run' if _PRIVATE else 'reused: TATR_TEST_CACHE'})"


def pytest_unconfigure(config):
    if _PRIVATE:
        shutil.rmtree(_CACHE, ignore_errors=True)
    if _OWNS_ZOOS:
        shutil.rmtree(os.environ["TATR_TEST_ZOOS"], ignore_errors=True)


@pytest.fixture(scope="session")
def micro_zoo():
    """The built-in micro zoo (built once per test run, by the first worker that needs it)."""
    from tatr_core.zoo import load_zoo

    lock = Path(os.environ["TATR_CACHE"]) / "zoos" / ".micro.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        return load_zoo("micro")
