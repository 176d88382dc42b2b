"""Background jobs for the dashboard: long analyses run in a worker thread of the server process.

A page asks for a result by a key (what is computed, from what); the first request starts the
job, every later one — from this page, after a rerun, from another page or another browser tab —
finds the same job, so a fit started on Compare Methods keeps running while the user looks at
another page and its result is there on return.  Jobs run one at a time on one worker thread (the
computations use every core already), the one the page in front of the user waits for first; the
results also land in the disk cache as usual, so a restarted server finds them there.  A job reports ``progress(fraction, message)`` like every
analysis, which gives the page its progress bar and a time estimate.

The mechanism is a thread pool in the Streamlit server process (no extra service to run).  Torch
releases the interpreter lock in its kernels, so pages stay responsive while a job computes; the
evaluator they share holds a lock per evaluation (:class:`tatr_core.evaluate.Evaluator`).
"""
from __future__ import annotations

import contextvars
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

#: finished jobs kept in memory (their results are on disk too); the oldest go first
KEEP_FINISHED = 64
#: a job a page asked for within this many seconds is in view (a waiting page's progress bar asks every second)
IN_VIEW_S = 2.5
#: seconds per unit of work (a task evaluation) before any job of the kind has been timed
DEFAULT_RATE = 1.0
#: a job that took less than this was served from the cache: it says nothing of its kind's cost
MEASURED_MIN_S = 0.5


class JobCancelled(Exception):
    """Raised inside a job's computation once the job is cancelled (from its progress reports)."""


@dataclass
class Job:
    key: str
    label: str
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    fraction: float = 0.0
    message: str = "waiting for the jobs before it"
    result: Any = None
    error: BaseException | None = None
    partial: Any = None  #: what the job has published so far (rows of a table, points of a sweep)
    asked: float = field(default_factory=time.monotonic)  #: when a page last asked for it (in view or not)
    cancelled: bool = False
    kind: str = ""  #: what it computes (an analysis kind): its cost is measured per kind
    units: float = 1.0  #: how much of it (tatr_core.analysis.cost_units); seconds = units × the kind's rate
    expected: float | None = None  #: seconds it is expected to take, from jobs of its kind measured so far

    def cancel(self) -> None:
        """Stop at the job's next progress report (the Ray executor reports twice a second while it waits,
        and then kills the workers busy with this job's points)."""
        self.cancelled = True

    @property
    def done(self) -> bool:
        return self.finished is not None

    def progress(self, fraction: float, message: str) -> None:
        if self.cancelled:
            raise JobCancelled(f"{self.label}: cancelled")
        self.fraction = min(max(float(fraction), self.fraction), 1.0)  # never backwards
        self.message = message

    def publish(self, partial: Any) -> None:
        """Make a partial result visible to the pages while the job goes on."""
        self.partial = partial

    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.monotonic()) - self.started

    def eta(self) -> float | None:
        """Seconds left: extrapolated from the progress so far, weighed against the time measured for jobs of its
        kind while little of it is done (a job's first points are often not its typical ones); None until there
        is something to go on."""
        if self.done or self.started is None:
            return None
        by_progress = None if self.fraction < 0.02 or self.elapsed() < 1.0 else \
            self.elapsed() * (1.0 - self.fraction) / self.fraction
        if self.expected is None:
            return by_progress
        by_kind = max(self.expected - self.elapsed(), 0.0)
        if by_progress is None:
            return by_kind if self.elapsed() >= 1.0 else None
        return self.fraction * by_progress + (1.0 - self.fraction) * by_kind


class JobRunner:
    """Runs jobs one at a time on one worker thread: the ones in view first, the cheapest of them first.

    A job is in view while a page shows its progress bar (:meth:`submit`, :meth:`touch`: the bar asks
    every second); those go ahead of jobs that pages left behind, which still run afterwards.  Among
    either, the job expected to take least goes first (so a page's quick figures come before its slow
    ones), then the one asked for most recently.  The expected time is the job's size in units
    (:func:`tatr_core.analysis.cost_units`) times the seconds per unit measured on finished jobs of its
    kind (of any kind before one of its own has run; :data:`DEFAULT_RATE` before any).  A job runs until
    it ends or is cancelled (:meth:`cancel`, the Cancel button under its progress bar).
    """

    def __init__(self):
        self._jobs: dict[str, Job] = {}
        self._fns: dict[str, Callable[[Job], Any]] = {}
        self._lock = threading.Condition()
        self._worker: threading.Thread | None = None
        self._rates: dict[str, float] = {}  #: measured seconds per unit, per kind

    def rate(self, kind: str) -> float:
        """Seconds per unit of ``kind``: measured, else the mean of the kinds measured, else the default."""
        if kind in self._rates:
            return self._rates[kind]
        return sum(self._rates.values()) / len(self._rates) if self._rates else DEFAULT_RATE

    def estimate(self, kind: str, units: float) -> float:
        """Seconds a job of ``kind`` and ``units`` is expected to take."""
        return units * self.rate(kind)

    def measured(self, kind: str) -> bool:
        return kind in self._rates

    def measured_any(self) -> bool:
        return bool(self._rates)

    def submit(self, key: str, label: str, fn: Callable[[Job], Any], restart: bool = False, *, kind: str = "",
               units: float = 1.0) -> Job:
        """The job for ``key``: the running or finished one, or a new one computing ``fn(job)`` (which
        reports through ``job.progress(fraction, message)`` and may ``job.publish(partial)``).
        A job that failed is started again on the next request (the failure may have been fixed); a
        cancelled one stays cancelled until a request says ``restart``."""
        with self._lock:
            job = self._jobs.get(key)
            failed = job is not None and job.done and job.error is not None
            if job is not None and (not failed or (isinstance(job.error, JobCancelled) and not restart)):
                job.asked = time.monotonic()
                return job
            job = self._jobs[key] = Job(key, label, kind=kind, units=float(units))
            job.expected = self.estimate(kind, job.units)
            # the job runs in the context of the request that started it: the precision and executor it asked for
            context = contextvars.copy_context()
            self._fns[key] = lambda job, fn=fn: context.run(fn, job)
            self._forget_old()
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="tatr-job", daemon=True)
                self._worker.start()
            self._lock.notify()
        return job

    def touch(self, key: str) -> None:
        """A page is waiting for ``key``: it goes first among the queued jobs."""
        job = self._jobs.get(key)
        if job is not None:
            job.asked = time.monotonic()

    def _next(self) -> tuple[Job, Callable[[Job], Any]]:
        with self._lock:
            while True:
                queued = [j for j in self._jobs.values() if j.started is None and j.key in self._fns]
                if queued:
                    now = time.monotonic()
                    job = min(queued, key=lambda j: (now - j.asked > IN_VIEW_S, self.estimate(j.kind, j.units),
                                                     -j.asked))
                    job.expected = self.estimate(job.kind, job.units)
                    job.started = time.monotonic()
                    return job, self._fns.pop(job.key)
                self._lock.wait()

    def _work(self) -> None:
        while True:
            job, fn = self._next()
            job.message = "starting"
            try:
                job.result = fn(job)
                job.fraction = 1.0
            except BaseException as exc:  # reported to the page that asks for the result
                job.error = exc
            finally:
                job.finished = time.monotonic()
            seconds = job.elapsed()
            if job.error is None and job.kind and seconds > MEASURED_MIN_S:  # not a record served from the cache
                rate = seconds / max(job.units, 1e-9)
                old = self._rates.get(job.kind)
                self._rates[job.kind] = rate if old is None else 0.5 * (old + rate)

    def cancel(self, key: str) -> None:
        """Cancel a queued job (it never starts) or a running one (it stops at its next progress report).
        Points it finished stay in the cache; asking for it again starts it again."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None or job.done:
                return
            job.cancel()
            if job.started is None:
                self._fns.pop(key, None)
                job.error, job.finished = JobCancelled(f"{job.label}: cancelled"), time.monotonic()

    def get(self, key: str) -> Job | None:
        return self._jobs.get(key)

    def pending(self) -> list[Job]:
        """Jobs queued or running, oldest first."""
        return [j for j in list(self._jobs.values()) if not j.done]

    def wait(self, timeout: float = 600.0) -> bool:
        """Block until nothing is pending (for tests and scripts); False on timeout."""
        end = time.monotonic() + timeout
        while self.pending():
            if time.monotonic() > end:
                return False
            time.sleep(0.05)
        return True

    def _forget_old(self) -> None:
        finished = sorted((j for j in self._jobs.values() if j.done), key=lambda j: j.finished)
        for job in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._jobs[job.key]


#: The dashboard's runner: one per server process, shared by every session and page.
RUNNER = JobRunner()


def format_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"
