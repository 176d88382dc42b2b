"""Helpers to serve the dashboard and drive it in Debian's chromium through Playwright
(used by ``tests/test_browser.py`` and ``scripts/screenshots.py``)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def dashboard(zoo: str, log_path: Path, start_timeout: float = 60, env: dict | None = None):
    """Serve ``app.py`` on a free loopback port with ``TATR_ZOO=zoo`` (and ``env``); yields the base URL."""
    port = free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                                 "--server.address", "127.0.0.1", "--server.headless", "true",
                                 "--browser.gatherUsageStats", "false"],
                                cwd=ROOT, env={**{k: v for k, v in os.environ.items() if k != "TATR_JOBS"},
                                               "TATR_ZOO": zoo, **(env or {})}, stdout=log, stderr=log)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.time() + start_timeout
            while True:
                try:
                    if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                        break
                except OSError:
                    if proc.poll() is not None or time.time() > deadline:
                        raise RuntimeError(f"the dashboard did not start; see {log_path}") from None
                    time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def settle(page, plots: int = 0, timeout: float = 240_000) -> None:
    """Wait until the page's title is up, the script run is over and ``plots`` plots have drawn."""
    page.wait_for_selector('[data-testid="stMain"] h1', timeout=timeout)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout)
    page.wait_for_function("() => [...document.querySelectorAll('.js-plotly-plot')]"
                           f".filter(p => p.querySelector('.main-svg')).length >= {plots}", timeout=timeout)


def shown_errors(page) -> list[str]:
    """Error messages, exceptions and tracebacks visible on the page (empty when there are none)."""
    found = [f"exception: {e.inner_text()[:200]}" for e in page.locator('[data-testid="stException"]').all()]
    found += [f"error: {e.inner_text()[:200]}" for e in page.locator('[data-testid="stAlertContentError"]').all()]
    text = page.locator('[data-testid="stMain"]').inner_text()
    found += [f"'{bad}' on the page" for bad in ("Traceback", "Something went wrong", "StreamlitAPIException")
              if bad in text]
    return found


def screenshot(page, path: Path) -> None:
    """The page from its top, with no widget focused."""
    page.evaluate("() => { document.activeElement && document.activeElement.blur();"
                  " document.querySelectorAll('[data-testid=\"stMain\"], section').forEach(e => e.scrollTo(0, 0)); }")
    page.wait_for_timeout(300)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
