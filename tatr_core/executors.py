"""Who computes the points of an analysis (:mod:`tatr_core.points`): this process, or Ray actors,
and :func:`run_points`, which drives them.

:func:`run_points`:

1. looks every point up in the results cache by its spec (a point asked for twice is computed once);
2. hands the missing ones to the executor;
3. writes each result to the cache as it comes back, in this process (the *driver*), so workers need
   no shared filesystem;
4. reports it at once (``on_result``), so pages can draw as points arrive.

A point's cache entry is the same whichever executor computed it.  An interrupted landscape
resumes where it stopped, and a Ray run and a local run share their results.

* ``local`` (the default): one point after another, in this process, on the caller's evaluator.
  An error stops the analysis, as any error in this process does.
* ``ray``: actors (:class:`ZooWorker`) that each hold the zoo and an evaluator on their own GPU,
  or on their slice of the CPUs.  The driver feeds them points one at a time and takes results in
  the order they finish.

Chosen by the run options (:class:`tatr_core.options.RunOptions`): ``--executor local|ray``,
``--ray-address`` and ``--workers`` on the CLI, ``TATR_EXECUTOR``, ``TATR_RAY_ADDRESS`` and
``TATR_RAY_WORKERS`` for the dashboard.  Without an
address, Ray starts a private local instance with this machine's CPUs (and GPUs).  ``auto``
joins the cluster started on this machine with ``ray start --head``.  ``host:port`` or
``ray://host:port`` joins a remote one.

How a Ray worker gets what it computes with:

* **The zoo** is loaded by each worker from the path the driver loaded it from: the manifest
  path, or, for a built-in zoo, the cache folder (``$TATR_CACHE``, passed to the workers).  Every
  node must see the zoo's files at that path: one machine, a shared filesystem, or the same
  image.  A worker that finds other files (another content key) stops with an error.  A remote
  cluster also gets this project's code as the job's working directory; its Python needs
  ``requirements.txt``.
* **Gradients and plane directions** come from the driver through Ray's object store: one copy
  per node, fetched once per worker.
* **Results** come back to the driver, which writes the cache.  Workers write nothing that
  anyone reads.

Failures: when a worker dies, a new one takes its place and its point runs again.  A point
fails at most twice: then it is reported by name (:class:`tatr_core.points.PointFailure`) and
the other points complete.  An error in the analysis's input (:class:`TatrError`) stops the run
at once with its message.  Stopping the driver (Ctrl-C, or Cancel on a page) kills the workers
that are busy with points of this run; the next run starts fresh ones.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import socket
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from . import options
from .cache import recompute, recomputing
from .errors import TatrError
from .evaluate import Evaluator
from .options import EXECUTORS
from .placement import to_device
from .points import Point, PointFailure, PointRun, Shared, compute_point, record_check
from .zoo import Progress, Zoo, load_zoo, no_progress
from .zoo.mini import PRESETS
#: tries per point before it is reported as failed
TRIES = 2
_REPO = Path(__file__).resolve().parents[1]
_CURRENT: contextvars.ContextVar = contextvars.ContextVar("tatr_executor", default=None)


class LocalExecutor:
    """In this process, on the caller's evaluator: one point after another."""
    name = "local"

    def describe(self) -> str:
        return "local (in this process)"

    def run(self, zoo: Zoo, items: Sequence[tuple[int, Point]], shared: Shared, evaluator,
            progress: Progress) -> Iterator[tuple[int, Any]]:
        evaluator = evaluator or Evaluator(zoo)
        for index, point in items:
            progress(0.0, point.label)
            yield index, compute_point(zoo, evaluator, point, shared.values(point.shared),
                                       lambda f, m, label=point.label: progress(f, f"{label}: {m}"))


LOCAL = LocalExecutor()


def zoo_spec(zoo: Zoo) -> str:
    """What a worker passes to :func:`tatr_core.zoo.load_zoo` to load the driver's zoo."""
    if zoo.info.get("manifest"):
        return str(Path(zoo.info["manifest"]).resolve())
    if zoo.name in PRESETS and zoo.info.get("folder"):
        return zoo.name
    raise TatrError(f"zoo '{zoo.name}' was built in memory, so Ray workers cannot load it: use a built-in zoo or a "
                    "manifest, or --executor local")


class ZooWorker:
    """A Ray actor's state: the zoo, an evaluator on the actor's device, and the shared inputs it was sent."""

    KEEP_SHARED = 8

    def __init__(self, spec: str, key: str, threads: int, run_options: options.RunOptions):
        import torch

        torch.set_num_threads(max(1, int(threads)))
        options.set_current(run_options)  # the driver's cache root, precision and device
        self.zoo = load_zoo(spec)
        if self.zoo.key != key:
            raise TatrError(f"the Ray worker on {socket.gethostname()} loaded zoo '{spec}' with content key "
                            f"{self.zoo.key}, but the driver's is {key}: every node must see the same zoo files")
        self.evaluator = Evaluator(self.zoo)
        self.shared: OrderedDict[str, Any] = OrderedDict()

    def where(self) -> str:
        return f"{socket.gethostname()} pid {os.getpid()} ({self.evaluator.device})"

    def compute(self, point: Point, names: list[str], refs: list, fresh: bool):
        import ray

        for name, ref in zip(names, refs):
            if name not in self.shared:
                self.shared[name] = ray.get(ref)
            self.shared.move_to_end(name)
        while len(self.shared) > max(self.KEEP_SHARED, len(names)):
            self.shared.popitem(last=False)
        values = {n: self.shared[n] for n in names}
        with recompute() if fresh else contextlib.nullcontext():
            return compute_point(self.zoo, self.evaluator, point, values)


def check_reachable(address: str) -> None:
    """A clear error for a cluster address nobody answers at (before Ray's own minute of retries)."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise TatrError(f"Ray address '{address}' is not host:port, ray://host:port or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as exc:
        raise TatrError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}): start one with "
                        "`ray start --head`, fix --ray-address / TATR_RAY_ADDRESS, or use --executor local") from None


class RayExecutor:
    """Ray actors that hold the zoo, fed points one at a time (see the module's docstring)."""
    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, cpus_per_worker: int | None = None,
                 local_cpus: int | None = None):
        self.address = address or None
        self.workers = workers
        self.local_cpus = local_cpus  #: CPUs of the private local Ray (default: this machine's)
        self.cpus_per_worker = cpus_per_worker  #: default: the cluster's CPUs shared out among the workers
        self._pools: dict[str, list] = {}
        self._refs: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._plan: tuple[int, float, float] | None = None
        self._actor_class = None
        self.stats = {"points": 0, "retried": 0, "replaced": 0, "failed": 0}  #: since this executor was made

    def describe(self) -> str:
        where = self.address or "a local Ray instance"
        n = self._plan[0] if self._plan else self.workers
        return f"ray ({n or 'one per GPU or CPU'} workers on {where})"

    # -- connection and workers ----------------------------------------------------------
    def _connect(self):
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            import ray
        except ImportError:  # pinned in requirements.txt; a bare environment may lack it
            raise TatrError("the Ray executor needs the ray package: pip install -r requirements.txt") from None
        if self.address is not None:
            check_reachable(self.address)
        if ray.is_initialized():
            return ray
        env = {**options.current().worker_environment(), "RAY_USAGE_STATS_ENABLED": "0",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")]))}
        kwargs: dict = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR",
                        "configure_logging": True}
        if self.address is None:
            # private to this process: it ends with it
            ray.init(address="local", num_cpus=self.local_cpus or os.cpu_count(), runtime_env={"env_vars": env}, **kwargs)
            return ray
        runtime_env = {"env_vars": {k: v for k, v in env.items() if k != "PYTHONPATH"},
                       "working_dir": str(_REPO),
                       "excludes": [".venv", "cache", "test-artifacts", ".git", "docs", "*.safetensors"]}
        try:
            ray.init(address=self.address, runtime_env=runtime_env, **kwargs)
        except (ConnectionError, RuntimeError, TimeoutError) as exc:
            raise TatrError(f"cannot join the Ray cluster at {self.address}: {str(exc).splitlines()[0]}; start one "
                            "with `ray start --head`, fix --ray-address / TATR_RAY_ADDRESS, or use --executor local") from None
        return ray

    def _resources(self, ray) -> tuple[int, float, float]:
        """(workers, CPUs each, GPUs each): one worker per GPU when the cluster has GPUs, else per CPU."""
        total = ray.cluster_resources()
        cpus, gpus = float(total.get("CPU", 1)), int(total.get("GPU", 0))
        n = self.workers or (gpus or int(cpus))
        n = max(1, int(n))
        gpu_each = min(1.0, gpus / n) if gpus else 0.0
        cpu_each = float(self.cpus_per_worker or max(1, int(cpus // n)))
        return n, cpu_each, gpu_each

    def _new_worker(self, ray, zoo: Zoo):
        n, cpu_each, gpu_each = self._plan
        if self._actor_class is None:
            self._actor_class = ray.remote(ZooWorker)
        actor = self._actor_class.options(num_cpus=cpu_each, num_gpus=gpu_each, max_restarts=0)
        return actor.remote(zoo_spec(zoo), zoo.key, int(cpu_each), options.current())

    def pool(self, zoo: Zoo, progress: Progress | None = None) -> list:
        """The workers holding ``zoo``: started on first use, and topped up after a cancelled run killed
        some.  New workers are checked: one that cannot load the zoo is an error naming why."""
        ray = self._connect()
        if self._plan is None:
            self._plan = self._resources(ray)
        workers = self._pools.setdefault(zoo.key, [])
        missing = self._plan[0] - len(workers)
        if missing <= 0:
            return workers
        if progress is not None:
            progress(0.0, f"starting {missing} Ray workers")
        new = [self._new_worker(ray, zoo) for _ in range(missing)]
        try:
            ray.get([w.where.remote() for w in new])
        except ray.exceptions.RayError as exc:
            for w in new:
                ray.kill(w)
            raise TatrError(f"the Ray workers could not load zoo '{zoo.name}': {_cause(exc)}") from None
        workers.extend(new)
        return workers

    def _shared_ref(self, ray, zoo: Zoo, name: str, shared: Shared):
        key = (zoo.key, name)
        if key not in self._refs:
            # host tensors in the object store: each worker places them on its own device
            self._refs[key] = ray.put(to_device(shared.get(name), "cpu"))
            while len(self._refs) > 16:
                self._refs.popitem(last=False)
        self._refs.move_to_end(key)
        return self._refs[key]

    # -- running points ----------------------------------------------------------------------
    def run(self, zoo: Zoo, items: Sequence[tuple[int, Point]], shared: Shared, evaluator,
            progress: Progress) -> Iterator[tuple[int, Any]]:
        workers = self.pool(zoo, progress)  # connects first
        import ray

        idle = list(workers)
        queue = deque(items)
        tries: dict[int, int] = {}
        running: dict = {}  # object ref -> (worker, index, point)
        fresh = recomputing()
        try:
            while queue or running:
                while queue and idle:
                    worker = idle.pop(0)
                    index, point = queue.popleft()
                    refs = [self._shared_ref(ray, zoo, n, shared) for n in point.shared]
                    ref = worker.compute.remote(point, list(point.shared), refs, fresh)
                    running[ref] = (worker, index, point)
                ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
                progress(0.0, "")  # a heartbeat: a cancelled job stops here
                for ref in ready:
                    worker, index, point = running.pop(ref)
                    try:
                        value = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        cause = getattr(exc, "cause", None)
                        if isinstance(cause, TatrError):
                            raise TatrError(str(cause)) from None
                        idle.append(worker)
                        failure = self._retry(index, point, exc, tries, queue)
                    except ray.exceptions.RayError as exc:  # the worker died: a new one takes its place
                        replacement = self._new_worker(ray, zoo)
                        self.stats["replaced"] += 1
                        workers[workers.index(worker)] = replacement
                        idle.append(replacement)
                        failure = self._retry(index, point, exc, tries, queue)
                    else:
                        idle.append(worker)
                        self.stats["points"] += 1
                        yield index, value
                        continue
                    if failure is None:
                        self.stats["retried"] += 1
                    else:
                        self.stats["failed"] += 1
                        yield index, failure
        finally:
            # stopped early (cancelled, Ctrl-C, an input error): the busy workers go, with their points
            for worker, _, _ in running.values():
                with contextlib.suppress(Exception):
                    ray.kill(worker)
                with contextlib.suppress(ValueError):
                    workers.remove(worker)

    @staticmethod
    def _retry(index: int, point: Point, exc: BaseException, tries: dict, queue: deque) -> PointFailure | None:
        tries[index] = tries.get(index, 0) + 1
        if tries[index] < TRIES:
            queue.append((index, point))  # behind the others: another worker is likely to take it
            return None
        return PointFailure(point.label, _cause(exc))

    def kill_worker(self, zoo: Zoo, n: int = 0) -> None:
        """Kill one worker of ``zoo``'s pool (for tests of what happens when a worker dies)."""
        import ray

        ray.kill(self._pools[zoo.key][n])

    def shutdown(self) -> None:
        import ray

        for workers in self._pools.values():
            for w in workers:
                with contextlib.suppress(Exception):
                    ray.kill(w)
        self._pools.clear()
        self._refs.clear()


def _cause(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}".splitlines()[0]
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


_RAY: dict[tuple, RayExecutor] = {}


def get_executor(name: str | None = None, address: str | None = None, workers: int | None = None):
    """The executor called ``name`` (default: the run options', :mod:`tatr_core.options`); Ray ones are kept
    per (address, workers), so their workers stay up between analyses."""
    opts = options.current()
    name = name or opts.executor
    if name == "local":
        return LOCAL
    if name != "ray":
        raise TatrError(f"unknown executor '{name}': use {' or '.join(EXECUTORS)} (--executor, TATR_EXECUTOR)")
    address = address or opts.ray_address
    workers = opts.workers if workers is None else workers
    if workers is not None and workers < 1:
        raise TatrError(f"the number of Ray workers must be at least 1, got {workers}")
    key = (address, workers)
    if key not in _RAY:
        _RAY[key] = RayExecutor(address, workers)
    return _RAY[key]


def current_executor():
    """The executor set by :func:`using` in this context, else the one the run options name."""
    return _CURRENT.get() or get_executor()


@contextlib.contextmanager
def using(executor) -> Iterator[Any]:
    token = _CURRENT.set(executor)
    try:
        yield executor
    finally:
        _CURRENT.reset(token)


def run_points(zoo: Zoo, points: Sequence[Point], *, shared: Shared | None = None, evaluator=None, executor=None,
               progress: Progress = no_progress, on_result: Callable[[int, Any], None] | None = None,
               what: str = "points") -> PointRun:
    """Compute every point not in the cache, with ``executor`` (default: :func:`current_executor`).

    ``on_result(index, result)`` is called for each point as its result is known (cached ones first).
    A point that fails on every try (Ray) is left ``None`` and listed in ``failures``; an error in
    the analysis's input (:class:`tatr_core.errors.TatrError`) stops the run.
    """
    shared = shared or Shared()
    results: list = [None] * len(points)
    same: dict[str, list[int]] = {}
    for i, p in enumerate(points):
        same.setdefault(p.spec.key(), []).append(i)

    def deliver(first: int, result) -> None:
        for j in same[points[first].spec.key()]:
            results[j] = result
            if on_result is not None:
                on_result(j, result)

    todo = []
    for indices in same.values():
        cached = points[indices[0]].spec.load(record_check(points[indices[0]]))
        if cached is None:
            todo.append(indices[0])
        else:
            deliver(indices[0], cached)
    if not todo:
        return PointRun(results, [], 0)
    executor = executor or current_executor()
    total, done = len(same), len(same) - len(todo)
    failures: list[PointFailure] = []

    said = [f"{what}: {done}/{total} from the cache"]

    def point_progress(fraction: float, message: str) -> None:
        """Executors report here; an empty message is a heartbeat (the Ray executor's, while it waits),
        which repeats the last one: a cancelled job stops at it."""
        if message:
            said[0] = message
        progress((done + min(max(fraction, 0.0), 1.0)) / total, said[0])

    progress(done / total, said[0])
    for index, outcome in executor.run(zoo, [(i, points[i]) for i in todo], shared, evaluator, point_progress):
        done += 1
        if isinstance(outcome, PointFailure):
            failures.append(outcome)
        else:
            points[index].spec.store(outcome)
            deliver(index, outcome)
        said[0] = f"{what}: {done}/{total}"
        progress(done / total, said[0])
    if failures:
        logging.getLogger("tatr_core").warning(
            "%d of %d %s failed on every try and are left out: %s", len(failures), len(points), what,
            "; ".join(f"{f.label} ({f.error})" for f in failures))
    return PointRun(results, failures, len(todo))
