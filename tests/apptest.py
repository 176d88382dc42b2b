"""What the dashboard's AppTests share: the micro zoo for every page, and a page opened through the router."""
import pytest
from streamlit.testing.v1 import AppTest


@pytest.fixture(autouse=True)
def micro(monkeypatch, micro_zoo):
    monkeypatch.setenv("TATR_ZOO", "micro")
    return micro_zoo


def open_page(path: str | None = None, query: dict | None = None, timeout: int = 300) -> AppTest:
    """The router ``app.py`` run with ``query``, then switched to the page ``path``, with no exception or error."""
    at = AppTest.from_file("../app.py", default_timeout=timeout)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, at.exception
    if path is not None:
        at.switch_page(path).run()
        assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at
