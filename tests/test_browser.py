"""End to end in a real browser: the dashboard served on a free loopback port, driven by Playwright
through Debian's chromium. On every page: wait for the run and the plots, move one control, wait
again, assert that no error or exception is shown, and save a screenshot under test-artifacts/.

Skips, saying why, when chromium or Playwright is missing (the README's test command installs
chromium when it can).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from browser import CHROMIUM, FLAGS, ROOT, dashboard, screenshot, settle, shown_errors

ARTIFACTS = ROOT / "test-artifacts"

if not Path(CHROMIUM).exists():
    pytest.skip(f"browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright package")


@pytest.fixture(scope="module")
def server(micro_zoo):
    with dashboard("micro", ARTIFACTS / "streamlit.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def move_slider(page, label: str, key: str = "ArrowRight"):
    slider = page.locator('[data-testid="stSlider"]', has_text=label).get_by_role("slider").first
    slider.focus()
    page.keyboard.press(key)


def pick_radio(page, label: str):
    page.locator('[data-testid="stRadio"] label', has_text=label).first.click()


def pick_select(page, label: str, option: str):
    page.get_by_role("combobox", name=label).click()
    page.get_by_role("option", name=option, exact=True).first.click()


def bad_zoo_then_fix(page):
    """Home: a wrong manifest path shows the error with its fix inline; typing the zoo back recovers."""
    box = page.get_by_role("textbox", name="Zoo")
    box.fill("/nonexistent/zoo.yaml")
    box.press("Enter")
    page.wait_for_selector('[data-testid="stAlertContentError"]', timeout=30_000)
    assert "no such manifest file" in page.locator('[data-testid="stAlertContentError"]').inner_text()
    box.fill("micro")
    box.press("Enter")


# page (url path), what to move, what the URL query must then say, plots expected
PAGES = [
    ("", bad_zoo_then_fix, "zoo=micro", 0),
    ("learn", lambda p: move_slider(p, "λ"), "learn-lam=0.35", 6),
    ("merge_lab", lambda p: move_slider(p, "τ", "ArrowLeft"), "tau-tatr=0.5", 1),
    ("compare_methods", lambda p: pick_radio(p, "Table 6"), "cm-table=sensitivity", 0),
    ("sweeps", lambda p: pick_radio(p, "λ (scaling)"), "sw-parameter=lam", 1),
    ("knowledge_conflicts", lambda p: pick_radio(p, "accuracy"), "conflict-form=accuracy", 3),
    ("trust_region", lambda p: move_slider(p, "τ", "ArrowRight"), "tr-tau=2.0", 3),
    ("loss_landscape", lambda p: pick_select(p, "task loss shown beside the total", "shapes"), "ls-task=shapes", 3),
]


@pytest.mark.parametrize("path,move,expect,plots", PAGES, ids=[p[0] or "home" for p in PAGES])
def test_page_in_a_real_browser(server, browser, path, move, expect, plots):
    page = browser.new_page(viewport={"width": 1440, "height": 1800})
    try:
        page.goto(f"{server}/{path}", wait_until="domcontentloaded")
        settle(page, plots)
        assert not shown_errors(page), (path or "home", shown_errors(page))
        move(page)
        page.wait_for_function(f"() => decodeURIComponent(window.location.search).includes({expect!r})", timeout=30_000)
        settle(page, plots)
        assert not shown_errors(page), (path or "home", shown_errors(page))
        screenshot(page, ARTIFACTS / f"{path or 'home'}.png")
    finally:
        page.close()


def test_a_heatmap_on_screen_has_the_colour_scale_it_exports(server, browser, micro_zoo):
    """Screen = export: the Trust Region heatmap drawn in the browser uses the figure's own colour scale
    (Magma, from near-black), not one Streamlit substituted, and the same scale the PNG/PDF export is drawn
    from.  (Streamlit replaces the colour strings '#000001' … '#000010' in every chart with its palette,
    whatever the theme: Magma's '#000004' became '#ab63fa', pink.)"""
    from tatr_core.analysis.layers import layer_sensitivity
    from tatr_core.figures import layer_sensitivity_figure

    exported = layer_sensitivity_figure(layer_sensitivity(micro_zoo, "gradient", 0.01), "block").to_plotly_json()
    want = [[float(s), c] for s, c in exported["data"][0]["colorscale"]]
    page = browser.new_page(viewport={"width": 1440, "height": 1800})
    try:
        page.goto(f"{server}/trust_region", wait_until="domcontentloaded")
        settle(page, 3)
        drawn = page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')]
            .map(el => el._fullData && el._fullData[0]).filter(d => d && d.type === 'heatmap')
            .map(d => d.colorscale)""")
        assert drawn, "no heatmap drawn"
        assert [[float(s), c] for s, c in drawn[0]] == want
        assert want[0][1] == "rgb(0, 0, 4)"  # Magma starts near black (spelled so that Streamlit leaves it alone)
    finally:
        page.close()


def test_every_download_of_every_figure_on_a_page_arrives(server, browser, tmp_path):
    """Downloads never hang: on Trust Region (three figures) every format of every figure's Download menu
    gives a complete, valid file; the files are made once on "Prepare", never while a click waits."""
    magic = {"png": b"\x89PNG", "svg": b"<svg", "pdf": b"%PDF", "html": b"<html"}
    page = browser.new_page(viewport={"width": 1440, "height": 1800}, accept_downloads=True)
    try:
        page.goto(f"{server}/trust_region", wait_until="domcontentloaded")
        settle(page, 3)
        menus = page.locator('[data-testid="stPopover"] button', has_text="Download")
        assert menus.count() == 3
        got = []
        for n in range(3):
            menus.nth(n).click()
            panel = page.locator('[data-testid="stPopoverBody"]').last
            panel.get_by_role("button", name="Prepare PNG · SVG · PDF · HTML").click()
            panel.get_by_role("button", name="PDF").wait_for(timeout=120_000)
            for fmt in ("png", "svg", "pdf", "html"):
                with page.expect_download(timeout=30_000) as info:
                    panel.get_by_role("button", name=fmt.upper(), exact=True).click()
                path = tmp_path / f"{n}.{fmt}"
                info.value.save_as(path)
                data = path.read_bytes()
                assert len(data) > 2000 and data[:600].lower().find(magic[fmt].lower()) >= 0, (n, fmt, data[:80])
                got.append((n, fmt))
            page.keyboard.press("Escape")
            page.wait_for_timeout(300)
        assert len(got) == 12 and not shown_errors(page)
    finally:
        page.close()


def test_the_dashboard_runs_its_analyses_on_ray(browser, micro_zoo):
    """TATR_EXECUTOR=ray: the sidebar says so, and the conflict matrices and the landscape (points from
    Ray workers, streamed back to the page) draw with no error.  The first visit to this fresh server is a
    shared link to a page: it runs inside the app's navigation (zoo box, shared controls) with its view."""
    pytest.importorskip("ray")
    with dashboard("micro", ARTIFACTS / "streamlit-ray.log", env={"TATR_EXECUTOR": "ray", "TATR_RAY_WORKERS": "2"}) as url:
        page = browser.new_page(viewport={"width": 1440, "height": 1800})
        try:
            for path, plots in (("knowledge_conflicts?conflict-form=accuracy", 3), ("loss_landscape", 3)):
                page.goto(f"{url}/{path}", wait_until="domcontentloaded")
                settle(page, plots)
                assert not shown_errors(page), (path, shown_errors(page))
                sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
                assert "Zoo" in sidebar and "Points run on: ray" in sidebar, sidebar
                if path.startswith("knowledge_conflicts"):
                    assert "accuracy form" in page.locator('[data-testid="stMain"]').inner_text()
            screenshot(page, ARTIFACTS / "loss_landscape-ray.png")
        finally:
            page.close()
