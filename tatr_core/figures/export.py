"""Figure files: HTML (self-contained) or PDF / SVG / PNG through kaleido and the system's chromium.

Static exports share one chromium per process (kaleido's server, started on the first export and
stopped at exit): a report's dozens of figures, or a page's PNG / SVG / PDF, pay chromium's start
once instead of once per file.
"""
from __future__ import annotations

import atexit
import html
import os
import re
import shutil
import threading
import warnings
from pathlib import Path

import plotly.graph_objects as go

from ..cache import write_bytes_atomic
from ..errors import TatrError

FORMATS = (".pdf", ".svg", ".png", ".html")


def chromium() -> str | None:
    for candidate in (os.environ.get("BROWSER_PATH"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


_SERVER = threading.Lock()  #: one export at a time through the shared chromium
_STARTED: list[bool] = []


def _shared_chromium() -> None:
    """Start kaleido's server (one chromium kept for every export of this process) once."""
    if not _STARTED:
        import kaleido

        kaleido.start_sync_server(silence_warnings=True)
        atexit.register(kaleido.stop_sync_server, silence_warnings=True)
        _STARTED.append(True)


#: the paper presets: the width a figure is placed at (inches: a two-column paper's column and its full width)
PAPER_WIDTHS = {"paper-single": 3.25, "paper-full": 6.75}
STYLES = ("screen", *PAPER_WIDTHS)
#: the paper presets' type sizes at that width, in points (body and axis titles; ticks, legend and cell labels)
PAPER_PT, PAPER_SMALL_PT = 8.0, 7.0
_PX_PER_IN, _PT_PER_IN = 96, 72


def caption_of(fig: go.Figure) -> str:
    """The figure's title and provenance subtitle as plain text: the caption a paper preset offers beside the file."""
    text = str(fig.layout.title.text or "")
    text = re.sub(r"<br\s*/?>", ". ", text)
    text = html.unescape(re.sub(r"<[^>]+>", "", text))
    return re.sub(r"\s+", " ", text).strip().rstrip(".") + ("." if text.strip() else "")


def styled(fig: go.Figure, style: str = "screen") -> go.Figure:
    """``fig`` as the dashboard draws it (``screen``), or for a paper: no baked-in title (its text goes into the
    file's metadata and the caption offered beside it), the figure at the width it is placed at in the paper
    (``paper-single``: one column, 3.25 in; ``paper-full``: 6.75 in), type at 8 pt and 7 pt there, the legend
    below the plot."""
    if style == "screen":
        return fig
    if style not in PAPER_WIDTHS:
        raise TatrError(f"unknown figure style '{style}'; use one of {', '.join(STYLES)}")
    out = go.Figure(fig)
    width = round(PAPER_WIDTHS[style] * _PX_PER_IN)
    aspect = (fig.layout.height or 460) / (fig.layout.width or 720)
    px = lambda pt: round(pt * _PX_PER_IN / _PT_PER_IN, 2)  # noqa: E731  (the size in px that prints at pt)
    body, small = px(PAPER_PT), px(PAPER_SMALL_PT)
    out.update_layout(title=None, width=width, height=round(width * min(max(aspect, 0.6), 1.15)),
                      font=dict(size=body), margin=dict(l=round(5.5 * body), r=round(0.8 * body), t=round(0.8 * body),
                                                        b=round(4.5 * body)),
                      legend=dict(orientation="h", x=0.0, xanchor="left", y=-0.22, yanchor="top", font=dict(size=small),
                                  title=dict(font=dict(size=small))),
                      meta={**(fig.layout.meta if isinstance(fig.layout.meta, dict) else {}), "title": caption_of(fig),
                            "style": style})
    out.update_xaxes(tickfont=dict(size=small), title_font=dict(size=body), title_standoff=4)
    out.update_yaxes(tickfont=dict(size=small), title_font=dict(size=body), title_standoff=4)
    for trace in out.data:
        if hasattr(trace, "colorbar") and trace.colorbar is not None:
            trace.colorbar.update(tickfont=dict(size=small), title=dict(font=dict(size=body)), thickness=10)
        if hasattr(trace, "textfont"):
            trace.textfont = dict(size=small)
    out.update_annotations(font_size=small)
    return out


def _pdf_titled(data: bytes, title: str) -> bytes:
    """``data`` (a PDF) with its document title set, by an incremental update (a new Info dictionary appended with
    its own cross-reference section; nothing before it is changed)."""
    tail = data[-2048:]
    start = re.search(rb"startxref\s+(\d+)\s+%%EOF\s*$", tail)
    trailer = data.rfind(b"trailer")
    if not start or trailer < 0:
        return data  # a cross-reference stream (no classic trailer): left as made
    head = data[trailer:]
    size, root = re.search(rb"/Size\s+(\d+)", head), re.search(rb"/Root\s+(\d+\s+\d+\s+R)", head)
    if not size or not root:
        return data
    n = int(size.group(1))
    text = b"<FEFF" + title.encode("utf-16-be").hex().upper().encode() + b">"  # any character, as UTF-16BE
    body = data if data.endswith(b"\n") else data + b"\n"
    obj_at = len(body)
    body += b"%d 0 obj\n<< /Title %s /Creator (TATR Studio) >>\nendobj\n" % (n, text)
    xref_at = len(body)
    body += (b"xref\n%d 1\n%010d 00000 n \ntrailer\n<< /Size %d /Root %s /Info %d 0 R /Prev %s >>\nstartxref\n%d\n"
             b"%%%%EOF\n" % (n, obj_at, n + 1, root.group(1), n, start.group(1), xref_at))
    return body


def figure_bytes(fig: go.Figure, fmt: str, style: str = "screen") -> bytes:
    """The figure as ``pdf`` / ``svg`` / ``png`` bytes (kaleido + chromium) or self-contained ``html``, in a
    :func:`styled` style.  A PDF's document title is the figure's name (its caption's first sentence)."""
    fig = styled(fig, style)
    fmt = fmt.lower().lstrip(".")
    if fmt == "html":
        return fig.to_html(include_plotlyjs=True, full_html=True).encode()
    if f".{fmt}" not in FORMATS:
        raise TatrError(f"unknown figure format '{fmt}'; use one of {', '.join(f[1:] for f in FORMATS)}")
    browser = chromium()
    if browser is None:
        raise TatrError("static export (PDF/SVG/PNG) needs chromium: install it (apt-get install chromium) "
                        "or export to .html")
    os.environ.setdefault("BROWSER_PATH", browser)  # how kaleido finds chromium (a third-party setting)
    try:
        with _SERVER, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The kopts argument is ignored")
            _shared_chromium()
            data = fig.to_image(format=fmt, scale=2 if fmt == "png" else 1)
    except Exception as exc:  # kaleido / chromium failures: say what to do
        raise TatrError(f"static export through chromium at {browser} failed ({str(exc).splitlines()[0]}); "
                        "export to .html instead") from exc
    if fmt == "pdf":
        title = (fig.layout.meta or {}).get("title") if isinstance(fig.layout.meta, dict) else None
        return _pdf_titled(data, (title or caption_of(fig)).split(". ")[0] or "figure")
    return data


def save_figure(fig: go.Figure, path: str | os.PathLike, style: str = "screen") -> Path:
    """Write ``fig`` to ``path`` (format from the suffix) in a :func:`styled` style, atomically."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise TatrError(f"{path}: name the figure file .pdf, .svg, .png or .html")
    return write_bytes_atomic(path, figure_bytes(fig, path.suffix, style))
