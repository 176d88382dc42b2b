"""TATR Studio: the dashboard's entry point (``streamlit run app.py``).

It routes to the pages in ``app_pages/`` (the map is :data:`tatr_core.ui.navigation.PAGES`; the folder
is not called ``pages/``, so Streamlit's legacy page discovery stays out of ``st.navigation``'s way),
keeps the shared controls across pages and holds the zoo box in the sidebar; each page holds its own
layout.
"""
import streamlit as st

from tatr_core.ui.controls import control, keep_controls
from tatr_core.ui.jobs import executor_caption
from tatr_core.ui.navigation import HOME, PAGES
from tatr_core.ui.session import default_zoo

st.set_page_config(page_title="TATR Studio", page_icon=":material/explore:", layout="wide")
sections: dict[str, list] = {}
for info in PAGES:
    sections.setdefault(info.section, []).append(st.Page(info.path, title=info.title, icon=info.icon,
                                                         default=info.path == HOME))
page = st.navigation(sections)
keep_controls()
with st.sidebar:
    st.text_input("Zoo", key=control("zoo", default_zoo()),
                  help="mini (built in), micro (tiny, for tests) or the path of a zoo manifest (.yaml / .json)")
    st.caption(executor_caption(), help="Set with TATR_EXECUTOR=local|ray and TATR_RAY_ADDRESS before starting "
               "the dashboard (docs/ray.md)")
page.run()
