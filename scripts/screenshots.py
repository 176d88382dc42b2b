"""Screenshots of every dashboard page on a zoo (default: the mini zoo) for the README, the warm
start time of the home page, and for every page the time until its first figure (or first table
rows) is on screen and until it is complete.

    .venv/bin/python scripts/screenshots.py [--zoo mini] [--out docs/screenshots] [--cold]

``--cold`` serves from an empty results cache (the built zoo and its preprocessed images are
linked in), as a newcomer meets the pages the first time; the screenshots are then not written.
``--first-start`` serves from an entirely empty cache (no zoo either), as right after the install,
and times the home page only: the newcomer's first interactive view of the zoo.
Needs Debian's chromium and the playwright package (both come with the README's test command).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser import CHROMIUM, FLAGS, ROOT, dashboard, screenshot, settle, shown_errors  # noqa: E402

#: (URL path and query, screenshot name, plots to wait for)
VIEWS = [("", "home", 0), ("learn", "learn", 6), ("merge_lab", "merge_lab", 1),
         ("merge_lab?method=adamerging", "merge_lab_adamerging", 2), ("compare_methods", "compare_methods", 0),
         ("sweeps", "sweeps", 1), ("knowledge_conflicts?xi-on=true", "knowledge_conflicts", 4), ("trust_region", "trust_region", 3),
         ("loss_landscape", "loss_landscape", 3)]

FIRST = ("() => [...document.querySelectorAll('.js-plotly-plot')].filter(p => p.querySelector('.main-svg')).length"
         " + document.querySelectorAll('.tatr-table tbody tr').length > 0")


def cold_cache(zoo: str) -> str:
    """An empty cache with the built zoos and preprocessed images linked in (only results are cold)."""
    from tatr_core.cache import cache_dir

    root = tempfile.mkdtemp(prefix="tatr-cold-cache-")
    for kind in ("zoos", "data"):
        source = cache_dir(kind)
        if source.exists():
            os.symlink(source, Path(root) / source.name)
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", default="mini")
    parser.add_argument("--out", default="docs/screenshots")
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=1100)
    parser.add_argument("--cold", action="store_true", help="an empty results cache; no screenshots written")
    parser.add_argument("--first-start", action="store_true",
                        help="an empty cache, no zoo in it: time the home page only")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    out = ROOT / args.out
    sys.path.insert(0, str(ROOT))
    cold = cold_cache(args.zoo) if args.cold else None
    if args.first_start:
        cold = tempfile.mkdtemp(prefix="tatr-empty-cache-")
        args.cold = True
    if cold:
        os.environ["TATR_CACHE"] = cold
        print(f"cold results cache: {cold}")
    start = time.perf_counter()
    try:
        return run(args, out, start, sync_playwright)
    finally:
        if cold:
            shutil.rmtree(cold, ignore_errors=True)


def run(args, out: Path, start: float, sync_playwright) -> int:
    with dashboard(args.zoo, ROOT / "test-artifacts" / "screenshots.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.goto(url)
        settle(page, timeout=900_000)
        if args.first_start:  # interactive: the script run over and the zoo's table drawn (it lags the run a little)
            try:
                page.wait_for_selector('[data-testid="stDataFrame"]', timeout=30_000)
            except Exception:  # noqa: BLE001  (playwright's timeout: reported below as no table)
                pass
        print(f"home page interactive {time.perf_counter() - start:.1f} s after the server was started")
        if args.first_start:
            errors = shown_errors(page)
            tasks = page.locator('[data-testid="stDataFrame"]').count()
            print(f"the zoo's table of tasks on screen: {'yes' if tasks else 'NO'}; {'; '.join(errors) or 'no errors'}")
            browser.close()
            return 1 if errors or not tasks else 0
        failures = 0
        print(f"{'page':22s} {'first figure':>13s} {'complete':>9s}")
        for path, name, plots in VIEWS:
            t = time.perf_counter()
            page.goto(f"{url}/{path}")
            page.wait_for_selector('[data-testid="stMain"] h1', timeout=900_000)
            first = None
            if plots or name == "compare_methods":
                page.wait_for_function(FIRST, timeout=900_000, polling=100)
                first = time.perf_counter() - t
            settle(page, plots, timeout=900_000)
            # complete: every background job of the page done (no progress bar left), the final figures drawn
            page.wait_for_function("() => !document.querySelector('[data-testid=\"stProgress\"]')",
                                   timeout=900_000, polling=250)
            settle(page, plots, timeout=900_000)
            errors = shown_errors(page)
            failures += bool(errors)
            if not args.cold:
                screenshot(page, out / f"{name}.png")
            shown = "—" if first is None else f"{first:.1f} s"
            print(f"{name:22s} {shown:>13s} {time.perf_counter() - t:7.1f} s  {'; '.join(errors) or 'ok'}")
        browser.close()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
