"""Streamlit helpers shared by the dashboard pages (the pages hold layout only).

* the zoo in use: ``?zoo=`` in the URL, else the session, else ``$TATR_ZOO``, else ``mini``;
  loaded once per process with ``st.cache_resource`` and a visible progress bar on first build;
* errors shown as a message with the fix and the details in an expander, never a traceback;
* figure download buttons (PNG / SVG / PDF generated only when clicked, plus HTML).
"""
from __future__ import annotations

import os
import traceback
from contextlib import contextmanager

import streamlit as st

from .errors import TatrError
from .evaluate import Evaluator
from .zoo import Zoo, load_zoo


def zoo_spec() -> str:
    spec = st.query_params.get("zoo") or st.session_state.get("zoo") or os.environ.get("TATR_ZOO") or "mini"
    st.session_state["zoo"] = spec
    return spec


@st.cache_resource(show_spinner=False)
def _load(spec: str) -> Zoo:
    bar = st.progress(0.0, text=f"loading zoo {spec}")

    def progress(fraction: float, message: str) -> None:
        bar.progress(min(max(fraction, 0.0), 1.0), text=message)

    try:
        return load_zoo(spec, progress)
    finally:
        bar.empty()


@st.cache_resource(show_spinner=False)
def _evaluator(spec: str) -> Evaluator:
    return Evaluator(_load(spec))


def current_zoo() -> tuple[Zoo, Evaluator]:
    spec = zoo_spec()
    return _load(spec), _evaluator(spec)


@contextmanager
def friendly_errors():
    """Show user errors (and unexpected ones) as a message, with details in an expander, and stop the page."""
    try:
        yield
    except TatrError as exc:
        st.error(str(exc))
        st.stop()
    except Exception as exc:  # a bug: still no raw traceback on the page
        st.error(f"Something went wrong: {type(exc).__name__}: {exc}")
        with st.expander("details"):
            st.code(traceback.format_exc())
        st.stop()


def figure_downloads(fig, stem: str) -> None:
    from .figures import _chromium, figure_bytes

    cols = st.columns(4)
    formats = ["png", "svg", "pdf"] if _chromium() else []
    for col, fmt in zip(cols, formats):
        col.download_button(f"{fmt.upper()}", data=lambda fmt=fmt: figure_bytes(fig, fmt), file_name=f"{stem}.{fmt}",
                            mime={"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf"}[fmt],
                            key=f"dl-{stem}-{fmt}")
    cols[3].download_button("HTML", data=lambda: figure_bytes(fig, "html"), file_name=f"{stem}.html", mime="text/html",
                            key=f"dl-{stem}-html")
    if not formats:
        st.caption("PNG / SVG / PDF export needs chromium (apt-get install chromium); HTML works everywhere.")
