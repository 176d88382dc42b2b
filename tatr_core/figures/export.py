"""Figure files: HTML (self-contained) or PDF / SVG / PNG through kaleido and the system's chromium.

Static exports share one chromium per process (kaleido's server, started on the first export and
stopped at exit): a report's dozens of figures, or a page's PNG / SVG / PDF, pay chromium's start
once instead of once per file.
"""
from __future__ import annotations

import atexit
import os
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


def figure_bytes(fig: go.Figure, fmt: str) -> bytes:
    """The figure as ``pdf`` / ``svg`` / ``png`` bytes (kaleido + chromium) or self-contained ``html``."""
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
            return fig.to_image(format=fmt, scale=2 if fmt == "png" else 1)
    except Exception as exc:  # kaleido / chromium failures: say what to do
        raise TatrError(f"static export through chromium at {browser} failed ({str(exc).splitlines()[0]}); "
                        "export to .html instead") from exc


def save_figure(fig: go.Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix), atomically."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise TatrError(f"{path}: name the figure file .pdf, .svg, .png or .html")
    return write_bytes_atomic(path, figure_bytes(fig, path.suffix))
