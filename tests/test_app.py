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
