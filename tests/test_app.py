"""Dashboard pages through streamlit's AppTest, on the micro zoo: the numbers shown are the computed
ones, and moving a control changes them accordingly.  Pages run through the router ``app.py``
(as in the browser), so shared controls and page links behave as they do for a user.
``test_app_jobs.py`` holds the rest: the data methods, explicit models, and the background jobs."""
import json

import pytest
from streamlit.testing.v1 import AppTest

from apptest import micro, open_page  # noqa: F401  (micro: every test's zoo)
from tatr_core.merge import REGISTRY
from tatr_core.runs import evaluate_method
from tatr_core.ui.navigation import PAGES

def test_every_page_of_the_map_exists_and_runs():
    at = open_page()
    for info in PAGES:
        at.switch_page(info.path).run()
        assert not at.exception, (info.path, at.exception)
        assert not at.error, (info.path, [e.value for e in at.error])
        assert at.title, info.path
        # every figure comes with its Download menu (PNG / SVG / PDF / HTML)
        assert len(at.get("popover")) == len(at.get("plotly_chart")), info.path


def test_home_page_shows_the_zoo_and_its_accuracies(micro_zoo):
    at = open_page()
    tasks = at.dataframe[0].value
    assert list(tasks["task"]) == micro_zoo.task_names
    zs = evaluate_method(micro_zoo, "pretrained")
    assert list(tasks["zero-shot %"]) == [round(100 * zs["tasks"][t]["accuracy"], 1) for t in micro_zoo.task_names]
    methods = at.dataframe[1].value
    assert list(methods["method"]) == list(REGISTRY)
    assert len(at.latex) == 5


def test_the_server_leaves_the_cores_to_the_jobs():
    """The dashboard's Streamlit config: no source watcher (it cost a core), and no full garbage collection
    after every script run (a page waiting on a job reruns every second, and each collection over torch's
    heap held the interpreter lock: Loss Landscape's first figure took 55 s instead of 22 s)."""
    import tomllib
    from pathlib import Path

    config = tomllib.loads((Path(__file__).resolve().parents[1] / ".streamlit" / "config.toml").read_text())
    assert config["server"]["fileWatcherType"] == "none"
    assert config["runner"]["postScriptGC"] is False


def test_a_bad_zoo_is_reported_without_a_traceback(monkeypatch):
    monkeypatch.setenv("TATR_ZOO", "/nonexistent/zoo.yaml")
    at = AppTest.from_file("../app.py", default_timeout=60).run()
    assert not at.exception
    assert "no such manifest file" in at.error[0].value
    assert at.text_input(key="zoo").value == "/nonexistent/zoo.yaml"  # shown in the sidebar box, to fix there
    fixed = open_page(query={"zoo": "micro"})  # a link naming a zoo wins over $TATR_ZOO
    assert fixed.text_input(key="zoo").value == "micro" and fixed.dataframe


def test_merge_lab_tau_zero_shows_task_arithmetic(micro_zoo):
    at = open_page("app_pages/merge_lab.py")
    tatr = evaluate_method(micro_zoo, "tatr")
    assert at.metric[0].value == f"{100 * tatr['average_accuracy']:.1f}%"
    assert at.metric[2].value == f"{tatr['excluded']:,}"
    at.select_slider(key="tau-tatr").set_value(0.0).run()
    assert not at.exception
    ta = evaluate_method(micro_zoo, "task_arithmetic")
    assert at.metric[0].value == f"{100 * ta['average_accuracy']:.1f}%" and at.metric[2].value == "0"
    at.selectbox(key="method").set_value("ties").run()
    ties = evaluate_method(micro_zoo, "ties")
    assert at.metric[0].value == f"{100 * ties['average_accuracy']:.1f}%"
    assert "--method ties" in at.code[0].value
    assert at.query_params["method"] in ("ties", ["ties"])


def test_merge_lab_switches_lines_on_and_off(micro_zoo):
    """LiNeS is a toggle on the methods it applies to; on, its β replaces the λ control; the command reproduces it."""
    at = open_page("app_pages/merge_lab.py", query={"method": "task_arithmetic"})
    assert at.slider(key="lam-task_arithmetic") is not None
    at.toggle(key="lines-task_arithmetic").set_value(True).run()
    assert not at.exception
    lines = evaluate_method(micro_zoo, "task_arithmetic", lines_beta=0.5)
    assert at.metric[0].value == f"{100 * lines['average_accuracy']:.1f}%"
    assert not [s for s in at.slider if s.key == "lam-task_arithmetic"]  # LiNeS scales in place of λ
    assert "--lines-beta 0.5" in at.code[0].value and "--lam" not in at.code[0].value
    at.select_slider(key="lines_beta-task_arithmetic").set_value(1.0).run()
    assert at.metric[0].value == f"{100 * evaluate_method(micro_zoo, 'task_arithmetic', lines_beta=1.0)['average_accuracy']:.1f}%"
    # a data-using method: no LiNeS toggle (50 steps: the run the AdaMerging page test caches)
    data = open_page("app_pages/merge_lab.py", query={"method": "adamerging", "steps-adamerging": "50"})
    assert not data.exception and not [t for t in data.toggle if t.key == "lines-adamerging"]


def test_controls_persist_across_pages_and_come_back_from_the_url(micro_zoo):
    at = open_page("app_pages/merge_lab.py")
    at.selectbox(key="method").set_value("ties").run()
    at.switch_page("app_pages/trust_region.py").run()
    at.switch_page("app_pages/merge_lab.py").run()
    assert at.selectbox(key="method").value == "ties"
    # a shared link: the view comes back from the URL query; a bad value is ignored
    shared = open_page("app_pages/merge_lab.py", query={"method": "task_arithmetic", "lam-task_arithmetic": "0.5"})
    ta = evaluate_method(micro_zoo, "task_arithmetic", lam=0.5)
    assert shared.selectbox(key="method").value == "task_arithmetic"
    assert shared.metric[0].value == f"{100 * ta['average_accuracy']:.1f}%"
    bad = open_page("app_pages/merge_lab.py", query={"method": "no-such-method", "tau-tatr": "banana"})
    assert bad.selectbox(key="method").value == "tatr" and bad.select_slider(key="tau-tatr").value == 1.0


def test_knowledge_conflicts_page_shows_the_computed_totals(micro_zoo):
    from tatr_core.analysis.conflict import conflict_matrix

    at = open_page("app_pages/knowledge_conflicts.py")
    ta = conflict_matrix(micro_zoo, "task_arithmetic")
    tatr = conflict_matrix(micro_zoo, "tatr", tau=0.01)
    assert [m.value for m in at.metric[:2]] == [f"{ta['total_loss']:+.2f}", f"{tatr['total_loss']:+.2f}"]
    at.radio(key="conflict-form").set_value("accuracy").run()
    assert [m.value for m in at.metric[:2]] == [f"{100 * ta['total_accuracy']:+.2f}",
                                                f"{100 * tatr['total_accuracy']:+.2f}"]
    at.selectbox(key="conflict-left").set_value("ties").run()
    ties = conflict_matrix(micro_zoo, "ties")
    assert at.metric[0].value == f"{100 * ties['total_accuracy']:+.2f}"
    at.selectbox(key="conflict-left").set_value("tatr").run()  # the same method on both sides
    assert not at.exception and len(at.metric) == 2 and at.metric[0].value == at.metric[1].value


def test_knowledge_conflicts_page_shows_the_weight_disentanglement(micro_zoo):
    from tatr_core.analysis.disentanglement import disentanglement

    names = micro_zoo.task_names
    at = open_page("app_pages/knowledge_conflicts.py")
    assert not any(f["layout"]["title"]["text"].startswith("Weight disentanglement")
                   for f in (json.loads(c.proto.spec) for c in at.get("plotly_chart")))  # off until asked for
    at.toggle(key="xi-on").set_value(True).run()
    record = disentanglement(micro_zoo, names[:2], step=1.0)

    def shown():
        fig = next(f for f in (json.loads(c.proto.spec) for c in at.get("plotly_chart"))
                   if f["layout"]["title"]["text"].startswith("Weight disentanglement"))
        return fig, next(d["z"] for d in fig["data"] if d["type"] == "heatmap")

    fig, z = shown()
    assert z == record["xi"] and f"{names[0]} and {names[1]}" in fig["layout"]["title"]["text"]
    assert [m.value for m in at.metric[-2:]] == [f"{record['mean_unit']:.3f}", f"{record['mean']:.3f}"]
    at.selectbox(key="xi-first").set_value(names[1]).run()  # task 2 was names[1]: it moves to the first other task
    assert not at.exception and at.selectbox(key="xi-second").value == names[0]
    swapped = disentanglement(micro_zoo, [names[1], names[0]], step=1.0)  # (read from the cache the page filled)
    assert shown()[1] == swapped["xi"]


def test_knowledge_conflicts_page_shows_the_task_singular_vectors(micro_zoo):
    from tatr_core.analysis.tsv_view import tsv_view
    from tatr_core.figures import tsv_default_layer

    view = tsv_view(micro_zoo)
    at = open_page("app_pages/knowledge_conflicts.py")
    layer = at.selectbox(key="tsv-layer")
    assert layer.value == tsv_default_layer(view) and list(layer.options) == view["layers"]

    def heatmap():  # the interference matrix drawn on the page (the TSV figure's heatmap)
        fig = next(f for f in (json.loads(c.proto.spec) for c in at.get("plotly_chart"))
                   if "singular" in f["layout"]["title"]["text"].lower())
        return sum(next(d["z"] for d in fig["data"] if d["type"] == "heatmap"), [])

    def flat(matrix):
        return pytest.approx(sum(matrix, []))

    assert heatmap() == flat(view["interference"])
    other = view["layers"][0]
    layer.set_value(other).run()
    at.radio(key="tsv-scope").set_value("this layer").run()
    assert not at.exception and heatmap() == flat(view["per_layer"][other])
    assert sum(view["per_layer"][other], []) != flat(view["interference"])
    assert at.query_params["tsv-layer"] in (other, [other])


def test_trust_region_page_follows_tau_and_the_sensitivity(micro_zoo):
    from tatr_core.analysis.layers import layer_sensitivity

    at = open_page("app_pages/trust_region.py")
    one = layer_sensitivity(micro_zoo, "gradient", 0.01)
    assert at.metric[0].value == f"{one['excluded_total']:,}"
    assert at.metric[1].value == f"{one['histogram']['threshold']:.3e}"
    assert len(at.get("plotly_chart")) == 3
    at.select_slider(key="tr-tau").set_value(5.0).run()
    five = layer_sensitivity(micro_zoo, "gradient", 0.05)
    assert at.metric[0].value == f"{five['excluded_total']:,}" and five["excluded_total"] > one["excluded_total"]
    at.selectbox(key="tr-sensitivity").set_value("zero-shot").run()
    zs = layer_sensitivity(micro_zoo, "zero-shot", 0.05)
    assert at.metric[1].value == f"{zs['histogram']['threshold']:.3e}"
    assert not at.exception and not at.error


def test_loss_landscape_page_shows_the_plane_it_computed(micro_zoo):
    from tatr_core.analysis.components import loss_landscape

    at = open_page("app_pages/loss_landscape.py")
    total = loss_landscape(micro_zoo, None, step=0.2)
    assert any(f"‖Δ⊥‖ = {total['norms']['orthogonal']:.3g}" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 3  # the two landscapes and Figure 2(a)
    task = micro_zoo.task_names[1]
    at.selectbox(key="ls-plane").set_value(task).run()
    plane = loss_landscape(micro_zoo, task, step=0.2)
    assert any(f"‖Δ⊥‖ = {plane['norms']['orthogonal']:.3g}" in c.value for c in at.caption)
    assert plane["norms"] != total["norms"]


def test_loss_landscape_page_draws_figure_2a_with_the_band_it_is_given(micro_zoo):
    from tatr_core.analysis.components import loss_landscape, merged_component_accuracy

    at = open_page("app_pages/loss_landscape.py", query={"ls-orthogonal": "50.0"})
    assert len(at.get("plotly_chart")) == 3 and not at.exception
    plane = loss_landscape(micro_zoo, None, step=0.2, orthogonal_fraction=0.5)
    assert any(f"‖Δ⊥‖ = {plane['norms']['orthogonal']:.3g}" in c.value for c in at.caption)
    merged = merged_component_accuracy(micro_zoo, orthogonal_fraction=0.5)
    chart = at.get("plotly_chart")[2].proto.spec
    assert "the 50% of non-zero entries" in chart
    assert f"{100 * merged['models']['negative']['average_accuracy']:.1f}" in chart


def test_sweeps_page_shows_the_best_points_of_each_method(micro_zoo):
    from tatr_core.analysis.sweeps import sweep

    at = open_page("app_pages/sweeps.py")
    table = at.dataframe[0].value
    expected = [sweep(micro_zoo, m, "tau", sensitivity="gradient") for m in ("tatr", "ties")]
    assert list(table["best test %"]) == [round(100 * max(p["average_accuracy"] for p in r["points"]), 2)
                                          for r in expected]
    # the validation curve beside the test one, and the test accuracy at the value validation picks
    val = [sweep(micro_zoo, m, "tau", sensitivity="gradient", split="val") for m in ("tatr", "ties")]
    picks = [max(range(len(v["points"])), key=lambda i: v["points"][i]["average_accuracy"]) for v in val]
    assert list(table["τ (%) chosen on val"]) == [100 * v["points"][i]["value"] for v, i in zip(val, picks)]
    assert list(table["test % at that value"]) == [round(100 * e["points"][i]["average_accuracy"], 2)
                                                   for e, i in zip(expected, picks)]
    spec = at.get("plotly_chart")[0].proto.spec
    assert "validation" in spec and '"dash":"dash"' in spec.replace(" ", "")
    at.radio(key="sw-parameter").set_value("lam").run()
    assert not at.exception
    table = at.dataframe[0].value
    expected = [sweep(micro_zoo, m, "lam") for m in ("task_arithmetic", "tatr")]  # each at its default τ
    assert list(table["best test %"]) == [round(100 * max(p["average_accuracy"] for p in r["points"]), 2)
                                          for r in expected]
    assert expected[1]["points"][0]["params"]["tau"] == 0.01
    at.multiselect(key="sw-methods-lam").set_value([]).run()
    assert at.info and "at least one method" in at.info[0].value


def test_compare_methods_page_shows_the_table_and_its_marks(micro_zoo):
    from tatr_core.analysis.tables import SENSITIVITY_ROWS, base_label, method_table, to_html, to_latex

    from tatr_core.analysis.tables import trains_at_test_time

    at = open_page("app_pages/compare_methods.py")
    table = method_table(micro_zoo, test_time=False)  # training-free rows first: seconds, not minutes
    assert table["rows"] and not any(trains_at_test_time(r["method"]) for r in table["rows"])
    assert any("test-time training rows" in c.value for c in at.caption)
    shown = at.get("html")[0].proto.body
    assert shown == to_html(table)
    # the paper's layout: labelled groups, every "& TATR" row right under its base with its gain, marks
    # within a group, method names in the text colour (no grey index column), scrolling instead of clipping
    labels = [r["label"] for r in table["rows"]]
    for row in table["rows"]:
        if row["base"]:
            between = labels[labels.index(row["base"]) + 1: labels.index(row["label"])]
            assert all(base_label(b) == row["base"] for b in between), (row["label"], between)
            assert row["gain"] == pytest.approx(row["values"]["Avg"] - table["rows"][labels.index(row["base"])]["values"]["Avg"])
    assert "Training-free methods" in shown and "Basic baseline methods" in shown and "overflow-x:auto" in shown
    assert "TATR positive" not in labels  # Table 6 is its own table
    for group in {r["group"] for r in table["rows"]} - {"Basic baseline methods"}:
        in_group = [r for r in table["rows"] if r["group"] == group]
        assert sum(1 for r in in_group if r["rank"].get("Avg") == 1) >= 1
    assert "<u>" in shown and at.code[0].value.strip() == to_latex(table).strip()
    at.radio(key="cm-table").set_value("sensitivity").run()
    assert all(f"<th>{label}</th>" in at.get("html")[0].proto.body for label, *_ in SENSITIVITY_ROWS[1:])
    at.radio(key="cm-table").set_value("generalization").run()
    assert not at.exception and not at.error
    at.multiselect(key="cm-held-out").set_value([]).run()
    assert "held-out" in at.error[0].value  # a clear message, not a traceback


def test_learn_page_examples_follow_lambda(micro_zoo, monkeypatch, tmp_path):
    """λ reaches the examples; step 6 shows the orderings stored for this zoo, and nothing for another zoo's."""
    from tatr_core.analysis import orderings
    from tatr_core.zoo import mini

    monkeypatch.setattr(mini, "SHIPPED", tmp_path)
    (tmp_path / micro_zoo.key).mkdir()
    checks = [("TATR > Task Arithmetic", True, "47.1 vs 44.5"), ("AdaMerging > Task Arithmetic", False, "TW 36.9")]
    assert orderings.write_orderings(micro_zoo.key, checks, {"TATR": 47.1}) is not None
    assert orderings.write_orderings("no-such-zoo", checks, {}) is None
    at = open_page("app_pages/learn.py")
    shown = at.dataframe[-1].value
    assert list(shown["on this zoo"]) == ["holds", "does not hold"] and list(shown["numbers"]) == ["47.1 vs 44.5", "TW 36.9"]
    assert "**1 of 2 hold here.**" in " ".join(m.value for m in at.markdown)
    (tmp_path / micro_zoo.key / orderings.ORDERINGS_FILE).write_text('{"zoo": "another zoo", "checks": []}')
    assert orderings.stored_orderings(micro_zoo.key) is None
    ta = evaluate_method(micro_zoo, "task_arithmetic", lam=0.3)
    assert at.metric[0].value == f"{100 * ta['average_accuracy']:.1f}%"
    at.slider(key="learn-lam").set_value(0.0).run()
    assert not at.exception
    zs = evaluate_method(micro_zoo, "pretrained")
    assert at.metric[0].value == f"{100 * zs['average_accuracy']:.1f}%"  # λ = 0 is the pretrained model
    assert len(at.latex) >= 5


def test_learn_page_states_what_its_numbers_show(micro_zoo):
    """Every sentence of Learn's steps is generated from the record drawn beside it, at the λ of the slider."""
    from tatr_core.analysis import run
    from tatr_core.analysis.components import component_accuracy, component_summary
    from tatr_core.analysis.conflict import conflict_matrix
    from tatr_core.analysis.geometry import geometry_spec
    from tatr_core.ui import learn_text

    at = open_page("app_pages/learn.py")
    for lam in (0.3, 0.6):
        if lam != 0.3:
            at.slider(key="learn-lam").set_value(lam).run()
        text = " ".join(m.value for m in at.markdown)
        zs, ind = evaluate_method(micro_zoo, "pretrained"), evaluate_method(micro_zoo, "individual")
        ta = evaluate_method(micro_zoo, "task_arithmetic", lam=lam)
        assert learn_text.step1(run(micro_zoo, geometry_spec(micro_zoo))) in text
        assert learn_text.step2(ta, zs, ind, lam) in text
        assert learn_text.step3(conflict_matrix(micro_zoo, "task_arithmetic", lam=lam)) in text
        assert learn_text.step4(component_summary(component_accuracy(micro_zoo, lam=lam))) in text
    # step 4: accuracy and loss side by side; step 5: Task Arithmetic against TATR per task, live in τ
    specs = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("per task: loss" in spec for spec in specs) and any("task by task" in spec for spec in specs)
    assert any("\\u03bb = 0.6" in spec for spec in specs if "per task: loss" in spec)  # step 4 follows λ
    at.select_slider(key="learn-tau").set_value(5.0).run()
    tatr = evaluate_method(micro_zoo, "tatr", lam=0.6, tau=0.05)
    spec = next(c.proto.spec for c in at.get("plotly_chart") if "task by task" in c.proto.spec)
    assert "\\u03c4 = 5%" in spec and at.metric[-2].value == f"{100 * tatr['average_accuracy']:.1f}%"
    # the Ω the page writes is the code's definition (the mean of absolute per-sample gradients)
    from tatr_core.trust_region import SENSITIVITIES

    assert any(SENSITIVITIES["gradient"].formula in x.value for x in at.latex)


def _summary(raised_neg: int, mean_neg: float, orth: float = 0.1, K: int = 4) -> dict:
    tasks = [f"t{k}" for k in range(K)]
    part = lambda raised, mean, ab: {"raised_loss": tasks[:raised], "mean_loss_change": mean,  # noqa: E731
                                     "mean_accuracy_change": -mean * 10, "mean_abs_loss_change": ab}
    return {"tasks": tasks, "negative": part(raised_neg, mean_neg, abs(mean_neg) + 0.2),
            "positive": part(3, 0.8, 0.9), "orthogonal": part(1, 0.01, orth), "all": part(2, 0.3, 0.4),
            "negative_worst": {"task": "t0", "before": 1.25, "after": 2.5}}


def test_learn_text_says_the_papers_observations_only_when_the_numbers_show_them():
    from tatr_core.ui import learn_text

    overshoot = learn_text.step4(_summary(3, 0.7))
    assert "paper's observation" in overshoot and "does not show" not in overshoot and "+0.70 nats" in overshoot
    assert "**3 of 4**" in overshoot and "t0: 1.25 → 2.50 nats" in overshoot
    mixed = learn_text.step4(_summary(1, -0.5))
    assert "this zoo shows it only on those" in mixed and "paper's observation" not in mixed
    none = learn_text.step4(_summary(0, -0.5))
    assert "does not show the overshoot" in none
    assert "the smallest change" in none and "**not** the smallest" in learn_text.step4(_summary(0, -0.5, orth=5.0))
    assert "λ = 0" in learn_text.step4({**_summary(0, 0.0, orth=0.0), "positive": {**_summary(0, 0.0)["positive"],
                                        "mean_abs_loss_change": 0.0}, "negative": {**_summary(0, 0.0)["negative"],
                                        "mean_abs_loss_change": 0.0}})
    rec = lambda acc: {"average_accuracy": acc}  # noqa: E731
    below = learn_text.step2(rec(0.41), rec(0.423), rec(0.832), 0.3)
    assert "**41.0%**" in below and "1.3 points below zero-shot (42.3%)" in below and "does not show" in below
    assert "**-3%**" in below and f"recovering {learn_text.PAPER_SHARE:.0f}%" in below
    assert learn_text.PAPER_SHARE == pytest.approx(100 * (69.1 - 48.0) / (90.5 - 48.0))
    good = learn_text.step2(rec(0.70), rec(0.48), rec(0.905), 0.3)
    assert "**52%**" in good and "does not show" not in good and "far less" not in good
    cos = {"tasks": ["a", "b", "c"], "N": 10, "cosine": [[1, 0.05, -0.3], [0.05, 1, 0.02], [-0.3, 0.02, 1]]}
    one = learn_text.step1(cos)
    assert "**0.300** (a, c)" in one and "Not every pair is nearly orthogonal" in one and "**0.123**" in one
    conflict = {"tasks": ["a", "b"], "accuracy": [[None, 0.04], [-0.01, None]], "total_loss": 0.5, "total_accuracy": 0.03}
    three = learn_text.step3(conflict)
    assert "**a → b**" not in three and "**b → a**" in three and "**4.0 accuracy points**" in three
    assert "**+0.50 nats** of loss and **+3.0 accuracy points**" in three and "1 of the 2 entries" in three
    stored = {"script": "bench/mini_zoo_table.py", "date": "2026-12-06",
              "checks": [{"what": "TATR > Task Arithmetic", "holds": True}, {"what": "TIES ≥ Task Arithmetic", "holds": True}]}
    every = learn_text.orderings(stored)
    assert "**2 of 2 hold here.**" in every and "reproduces every one" in every and "not a small CLIP" not in every
    stored["checks"][1]["holds"] = False
    some = learn_text.orderings(stored)
    assert "**1 of 2 hold here.**" in some and "not a small CLIP in that respect: TIES ≥ Task Arithmetic." in some
