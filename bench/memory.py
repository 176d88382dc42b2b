"""Peak resident memory of a code block, sampled from /proc/self/statm in a background thread."""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE


@contextmanager
def peak_rss(result: dict, interval: float = 0.002):
    """Fill ``result`` with ``seconds``, ``peak`` (bytes, absolute) and ``extra`` (peak above the start)."""
    start_rss, peak, stop = rss_bytes(), [rss_bytes()], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    try:
        yield result
    finally:
        result["seconds"] = time.perf_counter() - t0
        stop.set()
        thread.join()
        peak[0] = max(peak[0], rss_bytes())
        result["peak"], result["extra"] = peak[0], peak[0] - start_rss
