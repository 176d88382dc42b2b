"""Dashboard pages through streamlit's AppTest (continued from ``test_app.py``, split so that two test
workers share them): the data methods on Merge Lab, page numbers against explicitly built models, and
the background jobs: progress, estimates, the scheduler's order and one key per computation."""
import pytest
from streamlit.testing.v1 import AppTest

from apptest import micro, open_page  # noqa: F401  (micro: every test's zoo)
from tatr_core.runs import evaluate_method
from tatr_core.ui.navigation import PAGES


def test_merge_lab_runs_the_data_methods_and_shows_what_they_learned(micro_zoo):
    at = open_page("app_pages/merge_lab.py", query={"method": "adamerging", "steps-adamerging": "50"})
    record = evaluate_method(micro_zoo, "adamerging", steps=50)
    assert at.metric[0].value == f"{100 * record['average_accuracy']:.1f}%"
    assert len(at.get("plotly_chart")) == 2  # accuracy bars and the learned layer-wise λ heatmap
    at.radio(key="granularity-adamerging").set_value("task").run()
    task_wise = evaluate_method(micro_zoo, "adamerging", steps=50, granularity="task")
    assert at.metric[0].value == f"{100 * task_wise['average_accuracy']:.1f}%"
    assert "--granularity task" in at.code[0].value
    at.selectbox(key="method").set_value("surgery").run()
    at.select_slider(key="steps-surgery").set_value(50).run()
    surgery = evaluate_method(micro_zoo, "surgery", steps=50)
    assert at.metric[0].value == f"{100 * surgery['average_accuracy']:.1f}%" and not at.exception
    at.selectbox(key="method").set_value("regmean").run()
    at.select_slider(key="alpha-regmean").set_value(0.5).run()
    regmean = evaluate_method(micro_zoo, "regmean", alpha=0.5)
    assert at.metric[0].value == f"{100 * regmean['average_accuracy']:.1f}%"


# ------------------------------------------------------------------ the numbers shown, computed independently
def _explicit_ta(zoo, lam: float, tasks=None) -> dict:
    """θ_pre + λ Σ_k (θ_k − θ_pre) written out over the state dicts (no TaskVectors, no merge registry)."""
    tasks = zoo.task_names if tasks is None else tasks
    return {k: v + lam * sum(zoo.finetuned[t][k] - v for t in tasks) if v.is_floating_point() else v
            for k, v in zoo.pretrained.items()}


def _direct(zoo, state_dict) -> dict:
    """{task: (accuracy, mean cross-entropy)} from a fresh encoder and one plain forward per task."""
    import torch
    import torch.nn.functional as F

    from tatr_core.models import head_logits

    enc = zoo.make_encoder()
    enc.load_state_dict(state_dict)
    mean, std = torch.tensor(zoo.mean).view(1, 3, 1, 1), torch.tensor(zoo.std).view(1, 3, 1, 1)
    out = {}
    for t in zoo.task_names:
        x, y = zoo.tasks[t].split("test")
        with torch.no_grad():
            logits = head_logits(enc((x.float() / 255 - mean) / std), zoo.tasks[t].head)
        out[t] = (int((logits.argmax(1) == y).sum()) / len(y), float(F.cross_entropy(logits, y)))
    return out


def _average(direct: dict) -> float:
    return sum(a for a, _ in direct.values()) / len(direct)


def test_merge_lab_numbers_equal_an_explicitly_built_model(micro_zoo):
    at = open_page("app_pages/merge_lab.py", query={"method": "task_arithmetic", "lam-task_arithmetic": "0.5"})
    assert at.metric[0].value == f"{100 * _average(_direct(micro_zoo, _explicit_ta(micro_zoo, 0.5))):.1f}%"
    at.slider(key="lam-task_arithmetic").set_value(0.0).run()
    assert at.metric[0].value == f"{100 * _average(_direct(micro_zoo, dict(micro_zoo.pretrained))):.1f}%"


def test_conflict_total_equals_explicit_leave_one_out_models(micro_zoo):
    at = open_page("app_pages/knowledge_conflicts.py")
    names = micro_zoo.task_names
    full = _direct(micro_zoo, _explicit_ta(micro_zoo, 0.3))
    total = 0.0
    for i, ti in enumerate(names):
        without = _direct(micro_zoo, _explicit_ta(micro_zoo, 0.3, [t for t in names if t != ti]))
        total += sum(full[tj][1] - without[tj][1] for tj in names if tj != ti)  # C_{j|i} = L_j(all) − L_j(all but i)
    shown = float(at.metric[0].value)
    assert abs(shown - total) < 0.005 + 1e-4, (shown, total)


def test_lambda_sweep_best_point_equals_explicit_models(micro_zoo):
    from tatr_core.analysis.sweeps import DEFAULT_GRIDS

    at = open_page("app_pages/sweeps.py", query={"sw-parameter": "lam", "sw-methods-lam": "task_arithmetic"})
    best = max(_average(_direct(micro_zoo, _explicit_ta(micro_zoo, lam))) for lam in DEFAULT_GRIDS["lam"])
    assert list(at.dataframe[0].value["best test %"]) == [round(100 * best, 2)]


def test_merge_lab_widgets_come_from_the_declarations(micro_zoo):
    at = open_page("app_pages/merge_lab.py", query={"method": "dare"})
    assert at.metric[0].value == f"{100 * evaluate_method(micro_zoo, 'dare')['average_accuracy']:.1f}%"
    at.radio(key="base-dare").set_value("ties").run()
    at.select_slider(key="drop_rate-dare").set_value(0.9).run()
    record = evaluate_method(micro_zoo, "dare", base="ties", drop_rate=0.9)
    assert at.metric[0].value == f"{100 * record['average_accuracy']:.1f}%" and "--base ties" in at.code[0].value
    for method in ("consensus", "magmax", "pcb", "iso_c", "iso_cts"):
        at.selectbox(key="method").set_value(method).run()
        assert not at.exception and not at.error, method
        expected = evaluate_method(micro_zoo, method)
        assert at.metric[0].value == f"{100 * expected['average_accuracy']:.1f}%", method


def test_sweeps_page_sweeps_a_declared_parameter(micro_zoo):
    from tatr_core.analysis.sweeps import sweep

    at = open_page("app_pages/sweeps.py", query={"sw-parameter": "drop_rate"})
    assert at.multiselect(key="sw-methods-drop_rate").value == ["dare"]
    expected = sweep(micro_zoo, "dare", "drop_rate")
    assert list(at.dataframe[0].value["best test %"]) == [
        round(100 * max(p["average_accuracy"] for p in expected["points"]), 2)]


def test_long_computations_run_in_the_background_and_survive_a_page_change(micro_zoo, monkeypatch):
    """With background jobs (the dashboard's default): the page shows a progress bar with a time estimate
    at once instead of blocking, the job goes on while the user is on another page, and the result is
    there on return."""
    from tatr_core.analysis.layers import layer_sensitivity
    from tatr_core.jobs import RUNNER

    monkeypatch.setenv("TATR_JOBS", "background")
    at = open_page("app_pages/trust_region.py", query={"tr-exemplars": "4", "tr-tau": "0.5"})
    if RUNNER.pending():  # (on a fast machine it may be done already: then it is shown below all the same)
        texts = [p.proto.text for p in at.get("progress")]
        assert any("per-task gradients and Ω" in t and "runs in the background" in t for t in texts), texts
        assert not at.get("plotly_chart")  # nothing drawn from a result that is not there yet
    at.switch_page("app_pages/home.py").run()  # away: the job goes on
    assert not at.exception
    assert RUNNER.wait(300)
    at.switch_page("app_pages/trust_region.py").run()
    record = layer_sensitivity(micro_zoo, "gradient", 0.005, 4)
    assert at.metric[0].value == f"{record['excluded_total']:,}"
    assert len(at.get("plotly_chart")) == 3 and not at.exception


def test_a_background_job_reports_progress_a_time_estimate_and_its_partial_result():
    import threading

    from tatr_core.jobs import JobRunner

    runner, release = JobRunner(), threading.Event()

    def work(job):
        job.progress(0.5, "half way")
        job.publish(["first row"])
        release.wait(30)
        return "all rows"

    job = runner.submit("k", "a table", work)
    for _ in range(200):
        if job.partial:
            break
        threading.Event().wait(0.01)
    assert job.partial == ["first row"] and job.fraction == 0.5 and not job.done
    assert runner.submit("k", "a table", work) is job  # a second request finds the same job
    release.set()
    assert runner.wait(30) and job.result == "all rows" and job.eta() is None

    def broken(job):
        raise ValueError("bad input")

    failed = runner.submit("b", "broken", broken)
    assert runner.wait(30) and isinstance(failed.error, ValueError)
    assert runner.submit("b", "broken", lambda job: "fixed") is not failed  # a failed job runs again when asked
    assert runner.wait(30) and runner.get("b").result == "fixed"


def test_the_job_a_page_waits_for_goes_first():
    """Queued jobs run most recently asked for first: the page in front of the user goes ahead of the
    jobs that pages left behind (which still run afterwards)."""
    import threading

    from tatr_core.jobs import JobRunner

    runner, release, order = JobRunner(), threading.Event(), []
    runner.submit("running", "a long fit", lambda job: release.wait(30))
    left_behind = runner.submit("old", "a page left behind", lambda job: order.append("old"))
    runner.submit("new", "another page", lambda job: order.append("new"))
    runner.touch("old")  # the user went back to the first page: its progress bar asks for it again
    release.set()
    assert runner.wait(30) and order == ["old", "new"] and left_behind.done


def test_the_cheaper_job_in_view_goes_first_and_costs_are_measured():
    """Among the jobs pages are showing, the one expected to take least runs first (Figure 2(a) before the
    landscape); jobs no page shows any more wait; the expected times come from jobs of the kind timed so far."""
    import threading
    import time

    from tatr_core import jobs
    from tatr_core.jobs import JobRunner

    runner, release, order = JobRunner(), threading.Event(), []
    runner.submit("running", "a long fit", lambda job: release.wait(30))
    away = runner.submit("away", "a page left behind", lambda job: order.append("away"), kind="conflict", units=1)
    runner.submit("slow", "the landscape", lambda job: order.append("slow"), kind="landscape", units=600)
    runner.submit("quick", "Figure 2(a)", lambda job: order.append("quick"), kind="merged-components", units=40)
    away.asked -= 2 * jobs.IN_VIEW_S  # its page is gone: cheapest, but not in view
    release.set()
    assert runner.wait(30) and order == ["quick", "slow", "away"]
    # timed: seconds per unit of a kind, and an estimate for the next job of it
    runner = JobRunner()
    runner.submit("a", "ten units", lambda job: time.sleep(0.6), kind="landscape", units=10)
    assert runner.wait(30) and runner.measured("landscape") and not runner.measured("conflict")
    assert runner.estimate("landscape", 20) == pytest.approx(2 * 0.6, rel=0.5)
    assert runner.estimate("conflict", 10) == pytest.approx(runner.estimate("landscape", 10))  # the mean of those timed
    runner.submit("b", "served from the cache", lambda job: None, kind="conflict", units=10)
    assert runner.wait(30) and not runner.measured("conflict")  # an instant job says nothing of the cost


def test_a_live_page_gets_its_cheapest_figure_first(micro_zoo, monkeypatch):
    """On the Knowledge Conflicts page, served with background jobs while the runner is busy: once it is
    free, the page's cheapest job (the TSV view, asked for third) runs first, then the two conflict
    matrices, then ξ (the most points); a job that no page shows any more waits until they are done."""
    import threading

    from tatr_core import jobs
    from tatr_core.analysis.conflict import conflict_spec
    from tatr_core.analysis.disentanglement import disentanglement_spec
    from tatr_core.analysis.tsv_view import tsv_spec
    from tatr_core.jobs import RUNNER

    monkeypatch.setenv("TATR_JOBS", "background")
    monkeypatch.setattr(jobs, "IN_VIEW_S", 3600.0)  # the page stays in view however slow this machine is
    monkeypatch.setattr(RUNNER, "_rates", {})  # costs in units alone, whatever earlier tests timed
    release = threading.Event()
    RUNNER.submit("live-page-blocker", "a long fit", lambda job: release.wait(120))
    left = RUNNER.submit("live-page-left-behind", "a page left behind", lambda job: None, kind="tsv", units=1)
    left.asked -= 7200
    at = open_page("app_pages/knowledge_conflicts.py", query={"xi-on": "true"})
    names = micro_zoo.task_names
    specs = {"tsv": tsv_spec(micro_zoo), "ta": conflict_spec(micro_zoo, "task_arithmetic"),
             "tatr": conflict_spec(micro_zoo, "tatr", tau=0.01),
             "xi": disentanglement_spec(micro_zoo, names[:2], step=1.0)}
    queued = {name: RUNNER.get(spec.key()) for name, spec in specs.items()}
    assert all(job is not None and job.started is None for job in queued.values()), queued
    release.set()
    assert RUNNER.wait(300)
    started = sorted([(job.started, name) for name, job in queued.items()] + [(left.started, "left behind")])
    order = [name for _, name in started]
    assert order[0] == "tsv" and set(order[1:3]) == {"ta", "tatr"} and order[3:] == ["xi", "left behind"], order
    at.run()
    assert not at.exception and len(at.get("plotly_chart")) == 4  # both matrices, the TSV view and ξ


def test_the_sidebar_precision_control_sets_the_evaluation_and_says_where_merges_run(micro_zoo):
    at = open_page()
    assert at.radio(key="precision").value == "auto"
    assert any("Evaluation: cpu, float32 (precision auto)" in c.value for c in at.sidebar.caption)
    assert any("Merges: task vectors and gradients in host memory (CPU)" in c.value for c in at.sidebar.caption)
    at.radio(key="precision").set_value("bf16").run()
    assert not at.exception and at.query_params["precision"] in ("bf16", ["bf16"])
    assert any("Evaluation: cpu, bf16 autocast (precision bf16)" in c.value for c in at.sidebar.caption)
    # the home page's zero-shot numbers are now the bf16 evaluation, cached under its own key
    from tatr_core import options
    from tatr_core.evaluate import Evaluator

    with options.using(precision="bf16"):
        bf16 = evaluate_method(micro_zoo, "pretrained", evaluator=Evaluator(micro_zoo))
    tasks = at.dataframe[0].value
    assert list(tasks["zero-shot %"]) == [round(100 * bf16["tasks"][t]["accuracy"], 1) for t in micro_zoo.task_names]


def test_out_of_memory_on_a_page_is_a_message_naming_what_to_lower(monkeypatch):
    import torch

    import tatr_core.runs

    def boom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(tatr_core.runs, "evaluate_method", boom)
    at = AppTest.from_file("../app.py", default_timeout=120).run()
    assert not at.exception
    assert at.error and at.error[0].value.startswith("Out of memory: lower the sample size, the exemplar count")
    assert not at.expander  # no traceback on the page


def test_every_page_job_is_keyed_by_the_spec_of_the_analysis_it_shows(micro_zoo):
    """Each page's background job has the key of the analysis whose record it shows: after a page ran, every
    spec it asked for holds its record in the cache under that same key; the same request from two pages
    (Learn's and Knowledge Conflicts' Task Arithmetic conflict matrix) is one key, so one job."""
    from tatr_core.analysis.conflict import conflict_spec
    from tatr_core.ui import jobs

    asked: dict[str, set] = {}
    at = open_page()
    for info in PAGES:
        before = len(jobs.ASKED)
        at.switch_page(info.path).run()
        assert not at.exception and not at.error, info.path
        asked[info.path] = {spec.key() for spec in jobs.ASKED[before:]}
        for spec in jobs.ASKED[before:]:
            assert spec.zoo == micro_zoo.key and spec.load() is not None, (info.path, spec.kind)
    pages_with_jobs = [p for p, keys in asked.items() if keys]
    assert len(pages_with_jobs) >= 6, pages_with_jobs
    ta_conflict = conflict_spec(micro_zoo, "task_arithmetic").key()
    assert ta_conflict in asked["app_pages/learn.py"] and ta_conflict in asked["app_pages/knowledge_conflicts.py"]
