"""Analyses on a page, run as background jobs (:mod:`tatr_core.jobs`) keyed by their spec.

:func:`analysis` is what a page calls: the record of a spec (:class:`tatr_core.keys.Spec`), or None
while its job runs, with a progress bar, a time estimate and the partial record drawn meanwhile.  The
job's key is ``spec.key()``, the key its record is cached under: two pages asking for the same
computation share one job, and a page never gets another computation's result.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable

import streamlit as st

from .. import options
from ..analysis import cost_units
from ..analysis import label as analysis_label
from ..analysis import run
from ..errors import TatrError
from ..evaluate import Evaluator
from ..executors import get_executor
from ..jobs import RUNNER, Job, JobCancelled, format_seconds
from ..keys import Spec
from ..zoo import Zoo

#: the specs pages asked for in this process, in order (``TATR_JOBS=inline``: the scripted page tests read it)
ASKED: list[Spec] = []


@contextmanager
def progress_bar(text: str):
    """A progress bar for a computation; yields the ``progress(fraction, message)`` callback, removed when done."""
    bar = st.progress(0.0, text=text)

    def progress(fraction: float, message: str) -> None:
        bar.progress(min(max(float(fraction), 0.0), 1.0), text=message)

    try:
        yield progress
    finally:
        bar.empty()


def jobs_inline() -> bool:
    """``TATR_JOBS=inline`` computes on the page itself instead of in a background job (scripted page tests)."""
    return options.current().jobs == "inline"


def analysis(zoo: Zoo, spec: Spec, evaluator: Evaluator | None = None, *, label: str | None = None,
             show_partial: Callable | None = None) -> Any:
    """The record of ``spec`` on ``zoo`` (:func:`tatr_core.analysis.run`), computed as a background job keyed
    by ``spec.key()``; None while it runs (see :func:`background`)."""
    return background(spec, label or analysis_label(spec),
                      lambda job: run(zoo, spec, evaluator=evaluator, progress=job.progress, on_update=job.publish),
                      show_partial=show_partial, units=cost_units(spec, len(zoo.task_names)))


def background(spec: Spec, label: str, fn: Callable, *, show_partial: Callable | None = None,
               units: float = 1.0) -> Any:
    """The result of ``fn(job)`` run as a background job keyed by ``spec.key()``, or None while it runs.

    While it runs, the page shows ``show_partial(job.partial)`` when the job has published something,
    and a progress bar with a time estimate that refreshes itself every second; when the job is done,
    the page reruns and gets the result.  The job goes on if the user moves to another page, and the
    result is there on return (the same spec finds the same job).  A failed job raises its error
    here, for :func:`tatr_core.ui.errors.friendly_errors`.
    """
    key = spec.key()
    if jobs_inline():
        ASKED.append(spec)
        job = Job(key, label)
        with progress_bar(label) as progress:
            job.progress = progress  # type: ignore[method-assign]
            return fn(job)
    job = RUNNER.submit(key, label, fn, kind=spec.kind, units=units)
    if job.done and isinstance(job.error, JobCancelled):
        st.info(f"{label}: cancelled. The points it finished are cached; running it again starts from them.")
        if st.button("Run again", key=f"restart-{key}"):
            RUNNER.submit(key, label, fn, restart=True, kind=spec.kind, units=units)
            st.rerun()
        return None
    if job.done:
        if job.error is not None:
            raise job.error
        return job.result
    _watch_job(key, show_partial)
    return None


def expected_text(zoo: Zoo, spec: Spec) -> str:
    """How long ``spec`` is expected to take, from the jobs this server has timed (or that it has not yet)."""
    units = cost_units(spec, len(zoo.task_names))
    if spec.path().exists():  # (the analysis that follows reads and verifies it; a stat is enough here)
        return "already computed: shown at once"
    if not RUNNER.measured(spec.kind):
        if RUNNER.measured_any():
            return (f"expected about {format_seconds(RUNNER.estimate(spec.kind, units))} (from the other analyses "
                    "timed on this server; none of this kind yet)")
        return "not yet timed on this server: the progress bar estimates the time once it runs"
    return f"expected about {format_seconds(RUNNER.estimate(spec.kind, units))} (from the jobs of this kind timed here)"


def show_failed(record: dict) -> None:
    """Name the points of an analysis that failed on every try (Ray executor), if any."""
    failed = record.get("failed") or []
    if failed:
        st.warning(f"{len(failed)} point(s) failed on every try and are left blank: "
                   + "; ".join(f"{f['point']} ({f['error']})" for f in failed[:5])
                   + (" …" if len(failed) > 5 else ""))


def executor_caption() -> str:
    """Where the analyses' points run, for the sidebar (``TATR_EXECUTOR``, ``TATR_RAY_ADDRESS``)."""
    try:
        return f"Points run on: {get_executor().describe()}"
    except TatrError as exc:
        return f"Executor setting ignored: {exc}"


@st.fragment(run_every=1.0)
def _watch_job(key: str, show_partial: Callable | None = None) -> None:
    """Refreshed every second on its own: the job's progress and what it has published so far."""
    job = RUNNER.get(key)
    if job is None or job.done:
        st.rerun()  # the whole page, which now finds the result
        return
    RUNNER.touch(key)  # this page is waiting for it: it goes first
    if show_partial is not None and job.partial is not None:
        show_partial(job.partial)
    if job.started is None:
        running = [j for j in RUNNER.pending() if j.started is not None]
        expected = RUNNER.estimate(job.kind, job.units)
        text = f"{job.label}: queued" + (f" behind {running[0].label}" if running else "") + \
            (f"; expected to take about {format_seconds(expected)} (measured on this server)"
             if RUNNER.measured(job.kind) else "")
    else:
        eta = job.eta()
        text = (f"{job.label}: {job.message} · {format_seconds(job.elapsed())} so far"
                + (f", about {format_seconds(eta)} left" if eta is not None else ""))
    st.progress(job.fraction, text=text + " · runs in the background: other pages stay usable")
    if st.button("Cancel", key=f"cancel-{key}", help="Stop this computation; the points it finished stay cached"):
        RUNNER.cancel(key)
        st.rerun()
