"""Figures render (HTML always; PDF/SVG/PNG through chromium), tables are compile-ready, the CLI works."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from tatr_core import figures
from tatr_core.analysis.tables import (METHOD_ROWS, SENSITIVITY_ROWS, generalization_table, method_table, to_csv, to_latex,
                                       to_markdown, trains_at_test_time)
from tatr_core.analysis.tsv_view import tsv_view
from tatr_core.figures import FIGURES, build_figure
from tatr_core.errors import TatrError
from clirun import run_cli

ROOT = Path(__file__).resolve().parents[1]
HAVE_CHROMIUM = figures.chromium() is not None
needs_chromium = pytest.mark.skipif(not HAVE_CHROMIUM, reason="chromium not installed: static export untested "
                                                               "(scripts/setup.sh installs it when run as root)")
#: small settings, for every figure that takes them
QUICK = dict(exemplars=8, sample=40, step=0.5, per_task=True)
#: the generic sweep needs methods and a parameter; the fits train a few steps
OVERRIDES = {"sweep": dict(methods=["pcb"], parameter="density", values=[0.1, 0.3]),
             "adamerging-coefficients": dict(steps=3, batch=4), "surgery-gap": dict(steps=3, batch=4),
             "disentanglement": dict(step=1.5)}


def quick(name: str) -> dict:
    declared = FIGURES[name].declared
    return {**{k: v for k, v in QUICK.items() if k in declared}, **OVERRIDES.get(name, {})}


@pytest.fixture(scope="module")
def micro_figures(micro_zoo):
    """Every figure of the registry, built on the micro zoo (a new figure is in this test without a line here)."""
    return {name: build_figure(name, micro_zoo, quick(name)) for name in FIGURES}


def test_every_figure_builds_with_labelled_axes(micro_figures, micro_zoo):
    for kind, fig in micro_figures.items():
        assert fig.layout.title.text, kind
        assert fig.data, kind
        html = figures.figure_bytes(fig, "html")
        assert len(html) > 10_000 and b"<html" in html
    sweep = micro_figures["tau-sweep"]
    assert sweep.layout.xaxis.title.text.startswith("τ") and sweep.layout.yaxis.title.text == "test accuracy (%)"
    # the same task keeps the same colour across figures
    lines = {d.name.split(": ")[-1]: d.line.color for d in sweep.data
             if d.name.split(": ")[-1] in micro_zoo.task_names}
    assert lines == {t: figures.task_colour(micro_zoo.task_names, t) for t in micro_zoo.task_names}
    assert sweep.data[0].name.startswith("TATR (")  # display names and the setting, not raw ids
    # mathematical names are sub- and superscripts in every export, never literal underscores
    for kind, fig in micro_figures.items():
        text = json.dumps(fig.to_plotly_json(), ensure_ascii=False)
        assert "θ_pre" not in text and "L_j" not in text and "Δ_i" not in text, kind
        assert "tau = 0." not in text and "tau=0." not in text, kind  # τ in % everywhere, as on the sliders
    assert "θ<sub>pre</sub>" in json.dumps(micro_figures["landscape"].to_plotly_json(), ensure_ascii=False)


@needs_chromium
def test_every_figure_exports_to_svg(micro_figures, tmp_path):
    for kind, fig in micro_figures.items():
        data = figures.save_figure(fig, tmp_path / f"{kind}.svg").read_bytes()
        assert b"<svg" in data[:500] and len(data) > 5000, kind


@needs_chromium
@pytest.mark.parametrize("fmt,magic", [("pdf", b"%PDF"), ("svg", b"<svg"), ("png", b"\x89PNG")])
def test_static_export(micro_figures, tmp_path, fmt, magic):
    path = figures.save_figure(micro_figures["conflict"], tmp_path / f"c.{fmt}")
    data = path.read_bytes()
    assert data[:200].find(magic) >= 0 and len(data) > 2000
    assert [p.name for p in tmp_path.iterdir()] == [f"c.{fmt}"]  # nothing half-written left


def test_conflict_colour_scale_can_be_shared(micro_zoo):
    from tatr_core.analysis.conflict import conflict_matrix

    rec = conflict_matrix(micro_zoo, "task_arithmetic", sample=40)
    own = figures.conflict_figure(rec).data[0]
    assert own.zmax == figures.conflict_extent(rec) == -own.zmin
    assert figures.conflict_figure(rec, "loss", bound=7.5).data[0].zmax == 7.5


def test_bad_figure_requests():
    with pytest.raises(TatrError, match="name the figure file"):
        figures.save_figure(figures.go.Figure(), "/tmp/x.jpg")
    with pytest.raises(TatrError, match="form must be"):
        figures.conflict_figure({"tasks": []}, "bogus")


def test_tsv_interference_is_zero_for_orthogonal_tasks():
    import torch

    from tatr_core.analysis.tsv_view import singular_task_interference

    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    a = (q[:, :2], torch.tensor([3.0, 1.0], dtype=torch.float64), q[:, 2:4])
    b = (q[:, 4:6], torch.tensor([2.0, 1.0], dtype=torch.float64), q[:, 6:8])
    assert singular_task_interference(a, b) == pytest.approx(0.0, abs=1e-12)
    c = (q[:, :2], torch.tensor([2.0, 1.0], dtype=torch.float64), q[:, 2:4])  # same singular vectors as a
    assert singular_task_interference(a, c) > 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("K", [1, 2, 4])
def test_tsv_view_against_full_svds(K, dtype):
    """Spectra and interference (Gram route for float32, SVD for float64; all pairs from two Grams)
    against full float64 SVDs and a pair-by-pair loop, on tall, wide and square matrices."""
    from tatr_core.analysis.tsv_view import task_singular_view
    from tatr_core.vectors import TaskVectors

    import reference

    g = torch.Generator().manual_seed(K)
    pre = {"tall": torch.randn(40, 12, generator=g, dtype=dtype), "wide": torch.randn(10, 30, generator=g, dtype=dtype),
           "square": torch.randn(16, 16, generator=g, dtype=dtype), "bias": torch.randn(16, generator=g, dtype=dtype)}
    fts = [{k: w + torch.randn(w.shape, generator=g, dtype=dtype) * (0.1 + k_) for k, w in pre.items()} for k_ in range(K)]
    names = [f"t{k}" for k in range(K)]
    rec = task_singular_view(TaskVectors.from_state_dicts(pre, fts), names, rank_fraction=0.25)
    spectra, interference = reference.tsv_view(pre, fts, 0.25)
    assert rec["layers"] == ["tall", "wide", "square"]  # 2-D tensors only
    tol = 1e-6 if dtype == torch.float32 else 1e-12  # float32 entries: the Gram route's σ/σ₁ to about 1e-8
    for layer in rec["layers"]:
        for k, t in enumerate(names):
            torch.testing.assert_close(torch.tensor(rec["spectra"][layer][t], dtype=torch.float64), spectra[layer][k],
                                       rtol=0, atol=tol)
        torch.testing.assert_close(torch.tensor(rec["per_layer"][layer], dtype=torch.float64), interference[layer], rtol=1e-5, atol=1e-8)
    mean = sum(interference.values()) / 3
    torch.testing.assert_close(torch.tensor(rec["interference"], dtype=torch.float64), mean, rtol=1e-5, atol=1e-8)
    if K > 1:
        assert float(mean.max()) > 0


def test_tsv_view_rejects_a_bad_rank_fraction(micro_zoo):
    with pytest.raises(TatrError, match="rank_fraction must lie in"):
        tsv_view(micro_zoo, rank_fraction=0.0, use_cache=False)


def test_tsv_view(micro_zoo):
    rec = tsv_view(micro_zoo, use_cache=False)
    layer = rec["layers"][0]
    assert all(abs(rec["spectra"][layer][t][0] - 1.0) < 1e-12 for t in micro_zoo.task_names)
    m = rec["interference"]
    assert all(m[i][i] == 0 for i in range(4)) and all(m[i][j] == m[j][i] for i in range(4) for j in range(4))
    # the figure shows the mean over layers, or one layer's own matrix
    heat = [d for d in figures.tsv_spectrum_figure(rec).data if d.type == "heatmap"][0]
    assert [list(r) for r in heat.z] == m
    heat = [d for d in figures.tsv_spectrum_figure(rec, layer, per_layer=True).data if d.type == "heatmap"][0]
    assert [list(r) for r in heat.z] == rec["per_layer"][layer]


def check_latex(tex: str, labels: list[str]) -> None:
    assert tex.count("{") - tex.count(r"\{") == tex.count("}") - tex.count(r"\}")
    for env in ("table", "tabular"):
        assert tex.count(r"\begin{" + env) == tex.count(r"\end{" + env) == 1
    assert r"\toprule" in tex and r"\bottomrule" in tex
    body = tex.split(r"\midrule", 1)[1]
    for label in labels:  # a "& TATR" row is indented under its base
        assert re.search(r"^(\\quad )?" + re.escape(label.replace("&", r"\&")) + " & ", body, re.M), label
    n_cols = tex.split(r"\begin{tabular}{", 1)[1].split("}", 1)[0]
    for line in body.splitlines():
        if line.endswith(r"\\") and not line.startswith(r"\multicolumn"):
            assert line.count(" & ") == len(n_cols) - 1
        elif line.startswith(r"\multicolumn"):  # a group's label spans the table
            assert line.startswith(r"\multicolumn{" + str(len(n_cols)) + "}{l}{\\textit{")


def test_method_tables_render(micro_zoo):
    # every row of Table 1; the test-time methods train for 20 steps here (rendering, not their quality, is tested)
    rows = [(label, group, method, {**kw, "steps": 20} if trains_at_test_time(method) else kw)
            for label, group, method, kw in METHOD_ROWS]
    table = method_table(micro_zoo, rows, sample=40)
    labels = [r[0] for r in METHOD_ROWS]
    check_latex(to_latex(table), labels)
    groups = {r["group"] for r in table["rows"]} - {"Basic baseline methods"}
    assert groups == {"Training-free methods", "Test-time training based methods"}
    for col in table["columns"]:  # every column has a best entry within each group of merge methods
        for group in groups:
            assert any(r["rank"].get(col) == 1 for r in table["rows"] if r["group"] == group), (col, group)
        assert not any(r["rank"] for r in table["rows"] if r["method"] in ("pretrained", "individual"))
    assert r"\multicolumn{" in to_latex(table) and r"\textit{Test-time training based methods}" in to_latex(table)
    caption = to_latex(table).split(r"\caption{", 1)[1].split("\n", 1)[0]
    assert "Test accuracy" in caption and "on the test split (a sample of 40 images per task)" in caption
    assert "defaults" in caption and r"\textbf{Bold}: the best in each group" in caption and r"\underline{" in caption
    assert r"\label{tab:test-accuracy-on-zoo-micro}" in to_latex(table)
    md = to_markdown(table)
    assert md.count("\n| ") == len(labels) + 3 + 1 and "**" in md  # rows, 3 group labels, the header
    assert to_csv(table).count("\n") == len(labels) + 1
    variants = method_table(micro_zoo, SENSITIVITY_ROWS, sample=40)
    check_latex(to_latex(variants), [r[0] for r in SENSITIVITY_ROWS])


def test_generalization_table(micro_zoo):
    from tatr_core.evaluate import Evaluator
    from tatr_core.merge import merge

    table = generalization_table(micro_zoo, ["shapes", "colours"], sample=40)
    assert table["columns"] == ["mnist", "textures", "Avg (merged)", "shapes", "colours", "Avg (held out)"]
    sub = micro_zoo.task_vectors.subset([0, 1])
    direct = Evaluator(micro_zoo).evaluate(merge(sub, "task_arithmetic").theta, sample=40)
    ta = table["rows"][0]["values"]
    assert ta["shapes"] == pytest.approx(100 * direct["shapes"].accuracy)
    check_latex(to_latex(table), ["Task Arithmetic", "TATR"])
    with pytest.raises(TatrError, match="unknown task"):
        generalization_table(micro_zoo, ["bogus"])


def test_cli_figure_table_report(micro_zoo, tmp_path):
    r = run_cli("figure", "tau-sweep", "--zoo", "micro", "--values", "0", "0.01", "--sensitivity", "zero-shot",
                "--out", tmp_path / "tau.html")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "tau.html").stat().st_size > 10_000
    # at fixed λ / τ: the report below reads the same rows from the cache
    r = run_cli("table", "methods", "--zoo", "micro", "--format", "latex", "--sample", "40", "--no-test-time", "--fixed",
                "--out", tmp_path / "t.tex")
    assert r.returncode == 0, r.stderr
    check_latex((tmp_path / "t.tex").read_text(), [r[0] for r in METHOD_ROWS if not trains_at_test_time(r[2])])
    r = run_cli("figure", "sweep", "--zoo", "micro", "--methods", "dare", "--parameter", "drop_rate", "--values", "0", "0.5",
                "--out", tmp_path / "dare.html")
    assert r.returncode == 0, r.stderr
    assert "drop rate p" in (tmp_path / "dare.html").read_text()
    r = run_cli("figure", "sweep", "--zoo", "micro", "--methods", "dare", "--out", tmp_path / "x.html")
    assert r.returncode == 2 and "needs --parameter" in r.stderr
    r = run_cli("figure", "conflict", "--zoo", "micro", "--out", tmp_path / "c.jpg")
    assert r.returncode == 2 and ".pdf, .svg, .png or .html" in r.stderr
    r = run_cli("figure", "components", "--zoo", "micro", "--exemplars", "8", "--sample", "40",
                "--orthogonal-fraction", "0.5", "--out", tmp_path / "fig2a.html")
    assert r.returncode == 0, r.stderr
    html = (tmp_path / "fig2a.html").read_text()
    assert "Merging one component of the task vectors" in html and "the 50% of non-zero entries" in html
    r = run_cli("figure", "landscape", "--zoo", "micro", "--orthogonal-fraction", "2", "--out", tmp_path / "l.html")
    assert r.returncode == 2 and "orthogonal_fraction of figure 'landscape' must be a number in [0, 1]" in r.stderr
    assert not (tmp_path / "l.html").exists()
    r = run_cli("figure", "conflict", "--zoo", "micro", "--step", "0.5", "--out", tmp_path / "c.html")
    assert r.returncode == 2 and "figure 'conflict' takes no --step" in r.stderr
    r = run_cli("report", "--zoo", "micro", "--out", tmp_path / "report", "--formats", "html", "--no-test-time", "--fixed",
                "--sample", "40", "--draft")
    assert r.returncode == 0, r.stderr
    index = (tmp_path / "report" / "index.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", index)
    assert len(links) >= 12 + 6 and all((tmp_path / "report" / link).exists() for link in links)
    assert "landscape-total-total-8x8-orth90pct.html" in links and "disentanglement-first-two-5x5.html" in links


def test_method_table_leaves_out_the_test_time_rows_on_request(micro_zoo):
    rows = [("Task Arithmetic", "Training-free methods", "task_arithmetic", {}),
            ("TW AdaMerging", "Test-time training methods", "adamerging", {"granularity": "task", "steps": 3}),
            ("Surgery & TATR", "TATR", "surgery", {"steps": 3, "tau": 0.01, "sensitivity": "zero-shot"})]
    quick = method_table(micro_zoo, rows, test_time=False)
    assert [r["label"] for r in quick["rows"]] == ["Task Arithmetic"] and quick["test_time"] is False
    full = method_table(micro_zoo, rows)
    assert [r["label"] for r in full["rows"]] == [r[0] for r in rows]
    assert full["rows"][0]["values"] == quick["rows"][0]["values"]


@needs_chromium
def test_the_landscape_colour_bar_is_as_tall_as_its_square_plot():
    """The colour bar spans the square plot's height (its y domain once the axes are made square), in the browser's
    own layout; and the figure keeps its size on a page."""
    from tatr_core.figures.builders import landscape_figure

    axis = [-0.5, 0.0, 0.5, 1.0, 1.5]
    record = {"axis": axis, "total": [[float(i + j) for i in range(5)] for j in range(5)], "loss": {}, "task": None,
              "points": {"orthogonal": (0, 0), "positive": (1, 0), "negative": (0, 1), "pretrained": (0.2, 0.3)},
              "params": {"orthogonal_fraction": 0.9}}
    fig = landscape_figure(record)
    full = fig.full_figure_for_development(warn=False)
    y0, y1 = full.layout.yaxis.domain
    assert full.data[0].colorbar.len == pytest.approx(y1 - y0, abs=0.02)
    assert fig.layout.meta["fixed_size"] is True


@needs_chromium
@pytest.mark.parametrize("style, inches", [("paper-single", 3.25), ("paper-full", 6.75)])
def test_the_paper_preset_sets_type_at_7_to_9_points_where_the_figure_is_placed(micro_figures, style, inches):
    """No baked-in title (it is the caption, and the PDF's title), the figure at the column's width with its type at
    7-9 pt there, the legend below the plot."""
    from tatr_core.figures import caption_of, figure_bytes, styled

    fig = micro_figures["conflict"]
    caption = caption_of(fig)
    assert caption.startswith("Knowledge conflict") and "<" not in caption
    svg = figure_bytes(fig, "svg", style).decode()
    width = float(re.search(r'<svg[^>]* width="([0-9.]+)"', svg).group(1))
    points = [float(px) * inches * 72 / width for px in re.findall(r"font-size: ?([0-9.]+)px", svg)]
    assert points and all(6.95 <= pt <= 9.05 for pt in points), sorted(set(points))  # px to 2 decimals
    assert "Knowledge conflict" not in svg  # no title drawn
    paper = styled(fig, style)
    assert paper.layout.legend.y < 0 and paper.layout.meta["title"] == caption
    pdf = figure_bytes(fig, "pdf", style)
    title = "<FEFF" + caption.split(". ")[0].encode("utf-16-be").hex().upper() + ">"
    assert pdf.startswith(b"%PDF") and f"/Title {title}".encode() in pdf and pdf.rstrip().endswith(b"%%EOF")
    assert b"/Info" in pdf.rsplit(b"trailer", 1)[1]


@needs_chromium
def test_the_figure_command_writes_the_paper_preset_and_prints_its_caption(micro_zoo, tmp_path):
    r = run_cli("figure", "conflict", "--zoo", "micro", "--style", "paper-single", "--out", tmp_path / "c.svg")
    assert r.returncode == 0, r.stderr
    assert "caption: Knowledge conflict" in r.stdout
    assert 'width="312"' in (tmp_path / "c.svg").read_text()  # 3.25 in at 96 px per inch


def test_ordering_checks_leave_task_aware_rows_out_of_surgerys_comparison():
    """Surgery is checked against every one-model row (the TATR paper's table has no task-aware method),
    and each check reports what it compared."""
    from tatr_core.analysis.orderings import ordering_checks

    avg = {"Pre-trained": 35.0, "Individual": 82.0, "Task Arithmetic": 57.0, "Ties-Merging": 55.0, "TATR": 59.0,
           "Representation Surgery": 75.0, "Representation Surgery & TATR": 77.0,
           "EMR-Merging (task-aware)": 78.0, "LW AdaMerging": 74.0}
    tests = {"a": 500, "b": 150}
    checks = {what: (holds, detail) for what, holds, detail in ordering_checks(avg, tests, set())}
    surgery = next(k for k in checks if k.startswith("Surgery"))
    assert checks[surgery] == (False, "Surgery 75.0; best other EMR-Merging (task-aware) (78.0)")
    checks = {what: (holds, detail)
              for what, holds, detail in ordering_checks(avg, tests, set(), {"EMR-Merging (task-aware)"})}
    assert checks[surgery] == (True, "Surgery 75.0; best other LW AdaMerging (74.0)")
    avg["LW AdaMerging"] = 75.5  # a one-model row above Surgery still fails it
    checks = {what: holds for what, holds, _ in ordering_checks(avg, tests, set(), {"EMR-Merging (task-aware)"})}
    assert not checks[surgery]
    assert checks["TIES ≥ Task Arithmetic"] is False and checks["TATR > Task Arithmetic"] is True
    assert checks["Task Arithmetic recovers ≥ 35% of the gap"] is True  # 22 of 47 points: 47%
    assert checks["every task has ≥ 200 test images"] is False
