"""The dashboard starts and shows what the registry holds."""
from streamlit.testing.v1 import AppTest

from tatr_core.merge import REGISTRY


def test_home_page_lists_every_registered_method():
    at = AppTest.from_file("../app.py", default_timeout=60).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["method"]) == list(REGISTRY)
    assert "TATR" in list(table["as in the paper"])
    assert len(at.latex) == 5
