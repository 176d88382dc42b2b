"""Figures on a page, drawn exactly as they export, each with its Download menu (PNG / SVG / PDF / HTML)."""
from __future__ import annotations

import plotly.graph_objects as go
import plotly.io as pio
import streamlit as st

from ..cache import digest
from ..figures import caption_of, chromium, figure_bytes


def show_figure(fig, key: str, stem: str | None = None, container=None) -> None:
    """A figure on the page exactly as it exports, full width, with its Download menu (``stem``: the
    file name; None: no menu).  ``theme=None`` turns Streamlit's plotly theme off, which would restyle
    fonts and colours on screen only; the figures spell their colour scales in ``rgb()`` for the
    colour strings Streamlit rewrites whatever the theme (:func:`tatr_core.figures.builders._rgb`)."""
    screen = go.Figure(fig)
    fixed = isinstance(fig.layout.meta, dict) and fig.layout.meta.get("fixed_size")
    if not fixed:  # a square plot (the landscape) keeps its size, so that its colour bar fits it
        screen.update_layout(width=None)  # the column's width on screen; the export keeps the figure's own
    (container or st).plotly_chart(screen, width="content" if fixed else "stretch", key=key, theme=None)
    if stem is not None:
        figure_downloads(fig, stem, key)


def figure_downloads(fig, stem: str, key: str) -> None:
    """A "Download" menu under a figure: PNG / SVG / PDF (the CLI's exporter) and self-contained HTML.

    The files are made when asked for ("Prepare"), inside the menu's own fragment (the page does not
    rerun) and kept by the server (``st.cache_data``, shared by the sessions); each button then hands
    over bytes that are already there, so a click never waits on the exporter (building the file on
    click made a download hang now and then).
    """
    with st.popover("Download", icon=":material/download:"):
        _download_menu(fig.to_json(), stem, key)


_MIMES = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf", "html": "text/html"}


#: the paper presets offered in the menu, and the formats each is made in
PAPER_FILES = {"paper-single": ("pdf", "svg"), "paper-full": ("pdf", "svg")}


@st.cache_data(max_entries=64, show_spinner=False)
def _export_all(spec: str, formats: tuple[str, ...]) -> dict[str, bytes]:
    """``formats``: ``fmt`` (as on screen) or ``style:fmt`` (a paper preset)."""
    fig = pio.from_json(spec)
    return {f: figure_bytes(fig, f.split(":")[-1], f.split(":")[0] if ":" in f else "screen") for f in formats}


@st.fragment
def _download_menu(spec: str, stem: str, key: str) -> None:
    """The menu's buttons (their widget keys from the figure's ``key`` on the page; its files named ``stem``)."""
    paper = [f"{style}:{fmt}" for style, fmts in PAPER_FILES.items() for fmt in fmts] if chromium() else []
    formats = tuple((["png", "svg", "pdf"] if chromium() else []) + ["html"] + paper)
    ready_key, wanted = f"dl-ready-{key}", digest([spec, formats])
    if st.session_state.get(ready_key) != wanted:
        label = "Prepare PNG · SVG · PDF · HTML" if len(formats) > 1 else "Prepare HTML"
        if not st.button(label, key=f"dl-prepare-{key}", width="stretch"):
            return
        with st.spinner("making the files…"):
            files = _export_all(spec, formats)
        st.session_state[ready_key] = wanted
    else:
        files = _export_all(spec, formats)  # made by an earlier request: from the server's cache
    for f in formats:
        style, fmt = f.split(":") if ":" in f else ("", f)
        width = "one column" if style == "paper-single" else "full width"
        label = f"{fmt.upper()} for a paper, {width}" if style else fmt.upper()
        st.download_button(label, data=files[f], file_name=f"{stem}{'-' + style if style else ''}.{fmt}",
                           mime=_MIMES[fmt], key=f"dl-{key}-{f.replace(':', '-')}", width="stretch", on_click="ignore")
    if any(":" in f for f in formats):
        st.caption("The paper files carry no title; their caption (also in the PDF's metadata):")
        st.code(caption_of(pio.from_json(spec)), language=None, wrap_lines=True)
    if len(formats) == 1:
        st.caption("PNG / SVG / PDF export needs chromium (apt-get install chromium); HTML works everywhere.")
