"""Dashboard pages through streamlit's AppTest, on the micro zoo: numbers shown are the computed ones."""
import pytest
from streamlit.testing.v1 import AppTest

from tatr_core.merge import REGISTRY
from tatr_core.runs import evaluate_method


@pytest.fixture(autouse=True)
def micro(monkeypatch, micro_zoo):
    monkeypatch.setenv("TATR_ZOO", "micro")
    return micro_zoo


def test_home_page_shows_the_zoo_and_its_accuracies(micro_zoo):
    at = AppTest.from_file("../app.py", default_timeout=120).run()
    assert not at.exception
    tasks = at.dataframe[0].value
    assert list(tasks["task"]) == micro_zoo.task_names
    zs = evaluate_method(micro_zoo, "pretrained")
    assert list(tasks["zero-shot %"]) == [round(100 * zs["tasks"][t]["accuracy"], 1) for t in micro_zoo.task_names]
    methods = at.dataframe[1].value
    assert list(methods["method"]) == list(REGISTRY)
    assert len(at.latex) == 5


def test_home_page_reports_a_bad_zoo_without_a_traceback(monkeypatch):
    monkeypatch.setenv("TATR_ZOO", "/nonexistent/zoo.yaml")
    at = AppTest.from_file("../app.py", default_timeout=60).run()
    assert not at.exception
    assert "no such manifest file" in at.error[0].value


def test_merge_lab_tau_zero_shows_task_arithmetic(micro_zoo):
    at = AppTest.from_file("../pages/1_Merge_Lab.py", default_timeout=120).run()
    assert not at.exception
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


def test_knowledge_conflicts_page_shows_the_computed_totals(micro_zoo):
    from tatr_core.analysis.conflict import conflict_matrix

    at = AppTest.from_file("../pages/2_Knowledge_Conflicts.py", default_timeout=180).run()
    assert not at.exception
    ta = conflict_matrix(micro_zoo, "task_arithmetic")
    tatr = conflict_matrix(micro_zoo, "tatr", tau=0.01)
    assert [m.value for m in at.metric] == [f"{ta['total_loss']:+.2f}", f"{tatr['total_loss']:+.2f}"]
    at.radio(key="conflict-form").set_value("accuracy").run()
    assert [m.value for m in at.metric] == [f"{100 * ta['total_accuracy']:+.2f}", f"{100 * tatr['total_accuracy']:+.2f}"]
    at.selectbox(key="conflict-left").set_value("ties").run()
    ties = conflict_matrix(micro_zoo, "ties")
    assert at.metric[0].value == f"{100 * ties['total_accuracy']:+.2f}"
    at.selectbox(key="conflict-left").set_value("tatr").run()  # the same method on both sides
    assert not at.exception and len(at.metric) == 2 and at.metric[0].value == at.metric[1].value
