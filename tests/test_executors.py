"""Analyses as points (tatr_core.points) and who computes them (tatr_core.executors).

The local tests count the points an executor is handed.  The Ray tests start a private local Ray
(2 CPUs, no dashboard) and check that Ray computes exactly what the local executor
computes, that a killed worker costs nothing but a retry, and that failures are reported by name.
"""
import random
import threading
import time

import pytest
import torch

from tatr_core import executors
from tatr_core.analysis.components import component_accuracy, loss_landscape, merged_component_accuracy
from tatr_core.analysis.conflict import conflict_matrix
from tatr_core.analysis.sweeps import sweep
from tatr_core.analysis.tables import method_table
from tatr_core.cache import recompute
from tatr_core.errors import TatrError
from tatr_core.jobs import JobCancelled, JobRunner
from tatr_core.executors import run_points
from tatr_core.keys import Spec
from tatr_core.points import Point, Shared, linear_point
from tatr_core.runs import evaluate_method

from clirun import run_cli


class Counting:
    """The local executor, counting the points it is handed."""
    name = "counting"

    def __init__(self):
        self.points = []

    def describe(self):
        return "counting"

    def run(self, zoo, items, shared, evaluator, progress):
        for index, point in items:
            self.points.append(point.label)
            yield from executors.LOCAL.run(zoo, [(index, point)], shared, evaluator, progress)


#: a seed no earlier run used, so that the counting tests start from points no cache holds (a test run may
#: reuse a cache: TATR_TEST_CACHE)
FRESH = random.SystemRandom().randrange(1, 2 ** 31)


def _landscape(zoo, step, **kw):
    return loss_landscape(zoo, step=step, sample=16, exemplars=4, seed=FRESH, **kw)


# ------------------------------------------------------------------------------ local
def test_an_interrupted_landscape_resumes_where_it_stopped(micro_zoo):
    seen = []

    def stop_after_four(n_points):
        def on_update(partial):
            seen.append(1)
            if len(seen) == 4:
                raise KeyboardInterrupt
        return on_update

    with pytest.raises(KeyboardInterrupt):
        _landscape(micro_zoo, 0.7, task=micro_zoo.task_names[0], on_update=stop_after_four(9))
    counting = Counting()
    with executors.using(counting):
        record = _landscape(micro_zoo, 0.7, task=micro_zoo.task_names[0])
    assert len(counting.points) == 9 - 4  # the four finished points came from the cache
    assert all(v is not None for row in record["total"] for v in row)


def test_a_finer_grid_computes_only_its_new_points(micro_zoo):
    coarse = _landscape(micro_zoo, 0.7)  # axis -0.2, 0.5, 1.2
    counting = Counting()
    with executors.using(counting):
        fine = _landscape(micro_zoo, 0.35)  # axis -0.2, 0.15, 0.5, 0.85, 1.2
    assert len(counting.points) == 25 - 9
    for ib in range(3):
        for ia in range(3):
            assert fine["total"][2 * ib][2 * ia] == coarse["total"][ib][ia]


def test_sweep_points_are_the_evaluations_eval_caches(micro_zoo):
    lams = [round(x + FRESH % 10 ** 6 * 1e-9, 9) for x in (0.15, 0.45, 0.85)]  # values no earlier run evaluated
    for lam in lams[:2]:
        evaluate_method(micro_zoo, "task_arithmetic", lam=lam)
    counting = Counting()
    with executors.using(counting):
        record = sweep(micro_zoo, "task_arithmetic", "lam", lams)
    assert counting.points == [f"task_arithmetic: lam = {lams[2]}"]
    assert record["points"][0]["average_accuracy"] == evaluate_method(micro_zoo, "task_arithmetic", lam=lams[0])[
        "average_accuracy"]


def test_a_point_asked_for_twice_in_one_run_is_computed_once(micro_zoo):
    spec = Spec.of("linear", micro_zoo.key, {"terms": [], "tasks": micro_zoo.task_names[:1], "split": "test",
                                             "sample": 8, "seed": 0, "test": "twice"})
    spec.path().unlink(missing_ok=True)
    point = Point(spec, "θ_pre")
    counting = Counting()
    run = run_points(micro_zoo, [point, point], executor=counting)
    assert counting.points == ["θ_pre"] and run.results[0] == run.results[1] and run.computed == 1


def test_unknown_executor_and_bad_worker_counts_are_refused(monkeypatch):
    with pytest.raises(TatrError, match="unknown executor 'spark'"):
        executors.get_executor("spark")
    with pytest.raises(TatrError, match="at least 1"):
        executors.get_executor("ray", workers=0)
    monkeypatch.setenv("TATR_RAY_WORKERS", "two")
    with pytest.raises(TatrError, match="TATR_RAY_WORKERS must be a whole number"):
        executors.get_executor("ray")
    monkeypatch.setenv("TATR_EXECUTOR", "ray")
    monkeypatch.delenv("TATR_RAY_WORKERS")
    assert executors.current_executor().name == "ray"
    with executors.using(executors.LOCAL):
        assert executors.current_executor() is executors.LOCAL


def test_cancelling_a_job_stops_it_and_it_stays_cancelled_until_restarted():
    runner = JobRunner()
    started = threading.Event()

    def endless(job):
        started.set()
        while True:
            job.progress(0.5, "working")
            time.sleep(0.01)

    job = runner.submit("k", "endless", endless)
    assert started.wait(10)
    runner.cancel("k")
    assert runner.wait(10)
    assert isinstance(job.error, JobCancelled)
    assert runner.submit("k", "endless", endless) is job  # a page's rerun does not start it again
    queued = runner.submit("q", "never started", lambda job: 1)
    again = runner.submit("k", "endless", endless, restart=True)
    assert again is not job
    runner.cancel("q")  # queued behind the running one: it never starts
    runner.cancel("k")
    assert runner.wait(10) and isinstance(queued.error, JobCancelled)


# ------------------------------------------------------------------------------ Ray
@pytest.fixture(scope="module")
def ray_executor(micro_zoo):
    ray = pytest.importorskip("ray")
    ex = executors.RayExecutor(workers=2, local_cpus=2)
    ex.pool(micro_zoo)  # a private local Ray on this machine: 2 CPUs, no dashboard
    yield ex
    ex.shutdown()
    ray.shutdown()


def _same(a, b):
    """Equal to the last bit (the same code on the same inputs), but for θ_pre's projection onto a landscape's
    plane: a float64 least-squares solve in the driver, which two runs may round differently in the 15th digit."""
    if isinstance(a, dict) and "points" in a and "axis" in a:
        assert a["points"].keys() == b["points"].keys()
        for k in a["points"]:
            assert a["points"][k] == pytest.approx(b["points"][k], rel=1e-12, abs=1e-12)
        a, b = {k: v for k, v in a.items() if k != "points"}, {k: v for k, v in b.items() if k != "points"}
    assert a == b


def _six_analyses(zoo, executor) -> dict:
    """A sweep, a conflict matrix, a landscape, both component analyses and a table, all computed afresh."""
    with recompute(), executors.using(executor):
        return {"sweep": sweep(zoo, "tatr", "tau", [0.0, 0.01, 0.05], exemplars=4),
                "conflict": conflict_matrix(zoo, "tatr", exemplars=4, sample=24),
                "landscape": _landscape(zoo, 0.7, task=zoo.task_names[1]),
                "merged": merged_component_accuracy(zoo, exemplars=4, sample=24),
                "components": component_accuracy(zoo, exemplars=4, sample=24),
                "table": method_table(zoo, [("TA", "", "task_arithmetic", {}), ("TIES", "", "ties", {})], sample=24)}


def test_ray_computes_what_the_local_executor_computes(micro_zoo, ray_executor):
    by_ray = _six_analyses(micro_zoo, ray_executor)
    assert ray_executor.stats["points"] >= 3 + (len(micro_zoo.tasks) + 1) + 9 + 5
    local = _six_analyses(micro_zoo, executors.LOCAL)
    for name in by_ray:
        if name == "sweep":  # records keep each point's timing, which differs
            for p, q in zip(by_ray[name]["points"], local[name]["points"]):
                _same(p["tasks"], q["tasks"])
        elif name == "table":
            _same([r["values"] for r in by_ray[name]["rows"]], [r["values"] for r in local[name]["rows"]])
        else:
            _same(by_ray[name], local[name])


def test_a_killed_worker_costs_a_retry_and_the_landscape_completes(micro_zoo, ray_executor):
    before = dict(ray_executor.stats)
    killed = []

    def kill_once(partial):
        if not killed:
            killed.append(1)
            ray_executor.kill_worker(micro_zoo, 0)

    with recompute(), executors.using(ray_executor):
        record = _landscape(micro_zoo, 0.35, on_update=kill_once)
    assert killed and "failed" not in record
    assert ray_executor.stats["replaced"] > before["replaced"]
    with recompute(), executors.using(executors.LOCAL):
        local = _landscape(micro_zoo, 0.35)
    _same(record["total"], local["total"])


def test_cancelling_kills_the_busy_workers_and_the_next_run_starts_fresh_ones(micro_zoo, ray_executor):
    pool = ray_executor.pool(micro_zoo)
    before = list(pool)

    def cancel(fraction, message):
        if "landscape points: 1/" in message:  # the first point is in: the others are still running
            raise JobCancelled("cancelled")

    with recompute(), executors.using(ray_executor), pytest.raises(JobCancelled):
        loss_landscape(micro_zoo, step=0.35, sample=16, exemplars=5, progress=cancel)
    left = ray_executor._pools.get(micro_zoo.key, [])
    assert len(left) < len(before)  # the workers busy with its points are gone
    with executors.using(ray_executor):
        record = loss_landscape(micro_zoo, step=0.35, sample=16, exemplars=5)
    assert "failed" not in record and len(ray_executor.pool(micro_zoo)) == 2


def test_the_private_ray_has_the_cpus_it_was_given(ray_executor):
    import ray

    assert ray.cluster_resources()["CPU"] == 2 and len(ray.nodes()) == 1


def test_a_point_that_fails_twice_is_named_and_the_rest_complete(micro_zoo, ray_executor):
    good = linear_point(micro_zoo, "fine point", [], micro_zoo.task_names, "test", 8, 0, {"test": "good"})
    bad = linear_point(micro_zoo, "broken point", [("wrong-size", 1.0)], micro_zoo.task_names, "test", 8, 0,
                       {"test": "bad"})
    shared = Shared({"wrong-size": lambda: torch.zeros(3)})
    with recompute():
        run = run_points(micro_zoo, [bad, good], shared=shared, executor=ray_executor)
    assert run.results[0] is None and run.results[1] is not None
    assert [f.label for f in run.failures] == ["broken point"] and "size" in run.failures[0].error
    assert not bad.spec.path().exists()  # nothing cached for it


def test_an_input_error_on_a_worker_stops_the_run_with_its_message(micro_zoo, ray_executor):
    point = Point(Spec.of("linear", micro_zoo.key, {"terms": [], "tasks": micro_zoo.task_names, "split": "nope",
                                                    "sample": 8, "seed": 0}), "bad split")
    with pytest.raises(TatrError, match="unknown split 'nope'"):
        run_points(micro_zoo, [point], executor=ray_executor)


def test_an_unreachable_cluster_is_a_clear_error_with_exit_2(tmp_path):
    with pytest.raises(TatrError, match="cannot reach the Ray cluster at 127.0.0.1:9.*ray start --head"):
        executors.RayExecutor("127.0.0.1:9")._connect()
    out = run_cli("figure", "conflict", "--zoo", "micro", "--executor", "ray", "--ray-address", "127.0.0.1:9",
                  "--out", tmp_path / "c.png")
    assert out.returncode == 2 and "cannot reach the Ray cluster" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "c.png").exists()
    out = run_cli("figure", "conflict", "--zoo", "micro", "--workers", "2", "--out", tmp_path / "c.png")
    assert out.returncode == 2 and "need --executor ray" in out.stderr
