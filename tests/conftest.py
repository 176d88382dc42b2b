"""Every test run gets a private, empty cache (``$TATR_CACHE``), so no test can pass on a result
that older code left in the project's ``cache/``.  The micro zoo is built once per run (~10 s).

``TATR_TEST_CACHE=/some/folder`` reuses a cache across runs while developing; it is never the
default.
"""
import os
import shutil
import tempfile

import pytest

_PRIVATE = not os.environ.get("TATR_TEST_CACHE")
_CACHE = tempfile.mkdtemp(prefix="tatr-test-cache-") if _PRIVATE else os.environ["TATR_TEST_CACHE"]
os.environ["TATR_CACHE"] = _CACHE  # before tatr_core is imported: cache.CACHE_ROOT is read once, at import
# Scripted page tests (AppTest) compute on the page; test_app.py tests the background jobs themselves, and
# the browser tests serve the dashboard as users get it, with background jobs.
os.environ["TATR_JOBS"] = "inline"


def pytest_report_header(config):
    return f"TATR_CACHE={_CACHE} ({'private to this run' if _PRIVATE else 'reused: TATR_TEST_CACHE'})"


def pytest_unconfigure(config):
    if _PRIVATE:
        shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def micro_zoo():
    """The built-in micro zoo (built once per test run into the private cache)."""
    from tatr_core.zoo import load_zoo

    return load_zoo("micro")
