"""TATR Studio: the dashboard's entry point (``streamlit run app.py``).

It routes to the pages in ``pages/`` (the map is :data:`tatr_core.ui.PAGES`), keeps the shared
controls across pages and holds the zoo box in the sidebar; each page holds its own layout.
"""
import streamlit as st

from tatr_core import ui

st.set_page_config(page_title="TATR Studio", page_icon=":material/explore:", layout="wide")
sections: dict[str, list] = {}
for info in ui.PAGES:
    sections.setdefault(info.section, []).append(st.Page(info.path, title=info.title, icon=info.icon,
                                                         default=info.path == "pages/home.py"))
page = st.navigation(sections)
ui.keep_controls()
with st.sidebar:
    st.text_input("Zoo", key=ui.control("zoo", ui.default_zoo()),
                  help="mini (built in), micro (tiny, for tests) or the path of a zoo manifest (.yaml / .json)")
    st.caption(ui.executor_caption(), help="Set with TATR_EXECUTOR=local|ray and TATR_RAY_ADDRESS before starting "
               "the dashboard (README: Past one machine)")
page.run()
