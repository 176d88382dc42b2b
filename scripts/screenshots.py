"""Screenshots of every dashboard page on a zoo (default: the mini zoo) for the README, and the warm
start time of the home page.

    .venv/bin/python scripts/screenshots.py [--zoo mini] [--out docs/screenshots]

Needs Debian's chromium and the playwright package (both come with the README's test command).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser import CHROMIUM, FLAGS, ROOT, dashboard, screenshot, settle, shown_errors  # noqa: E402

#: (URL path and query, screenshot name, plots to wait for)
VIEWS = [("", "home", 0), ("learn", "learn", 4), ("merge_lab", "merge_lab", 1),
         ("merge_lab?method=adamerging", "merge_lab_adamerging", 2), ("compare_methods", "compare_methods", 0),
         ("sweeps", "sweeps", 1), ("knowledge_conflicts", "knowledge_conflicts", 2), ("trust_region", "trust_region", 3),
         ("loss_landscape", "loss_landscape", 2)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", default="mini")
    parser.add_argument("--out", default="docs/screenshots")
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=1100)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    out = ROOT / args.out
    start = time.perf_counter()
    with dashboard(args.zoo, ROOT / "test-artifacts" / "screenshots.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.goto(url)
        settle(page)
        print(f"home page interactive {time.perf_counter() - start:.1f} s after the server was started")
        failures = 0
        for path, name, plots in VIEWS:
            t = time.perf_counter()
            page.goto(f"{url}/{path}")
            settle(page, plots, timeout=900_000)
            errors = shown_errors(page)
            failures += bool(errors)
            screenshot(page, out / f"{name}.png")
            print(f"{name:22s} {time.perf_counter() - t:6.1f} s  {'; '.join(errors) or 'ok'}")
        browser.close()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
