"""Errors on a page: a message with the fix, details in an expander, never a traceback."""
from __future__ import annotations

import traceback
from contextlib import contextmanager

import streamlit as st

from ..errors import TatrError, out_of_memory


@contextmanager
def friendly_errors():
    """Show user errors (and unexpected ones) as a message, with details in an expander, and stop the page."""
    try:
        yield
    except TatrError as exc:
        st.error(str(exc))
        st.stop()
    except Exception as exc:  # a bug: still no raw traceback on the page
        if type(exc).__module__.startswith("streamlit"):  # rerun / stop requests are control flow, not errors
            raise
        if out_of_memory(exc):
            st.error("Out of memory: lower the sample size, the exemplar count or the batch size in the sidebar, "
                     "or use a machine with more memory. Nothing was cached.")
            st.stop()
        st.error(f"Something went wrong: {type(exc).__name__}: {exc}")
        with st.expander("details"):
            st.code(traceback.format_exc())
        st.stop()
