"""Plotly figure builders, one per analysis, shared by the dashboard and the CLI.

Each builder takes the analysis record (a JSON-able dict from :mod:`tatr_core.analysis`) and
returns a ``plotly.graph_objects.Figure`` in the publication template: readable fonts at
column width, the Okabe–Ito colour-blind-safe palette, labelled axes with units, and the same
task order and colour in every figure.  :func:`save_figure` writes HTML (self-contained) or
PDF / SVG / PNG through kaleido and the system's chromium (:mod:`.export`).
"""
from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..errors import TatrError
from ..merge import REGISTRY

#: Okabe & Ito (2008), colour-blind safe; tasks take colours in zoo order.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
FONT = dict(family="Helvetica, Arial, sans-serif", size=14, color="#222")
COMPONENT_COLOURS = {"pretrained": "#999999", "all": "#000000", "positive": "#D55E00", "negative": "#0072B2",
                     "orthogonal": "#009E73"}
#: Mathematical names as plotly draws them (HTML sub- and superscripts, on screen and in every export).
PRE = "θ<sub>pre</sub>"
COMPONENT_LABELS = {"pretrained": PRE, "all": f"{PRE} + λΔ", "positive": f"{PRE} + λΔ⁺",
                    "negative": f"{PRE} + λΔ⁻", "orthogonal": f"{PRE} + λΔ<sup>⊥</sup>"}


def task_colour(tasks: list[str], task: str) -> str:
    return PALETTE[tasks.index(task) % len(PALETTE)]


def _rgb(colour: str) -> str:
    """'#rrggbb' as 'rgb(r, g, b)': the same colour, in a spelling Streamlit leaves alone (its chart code
    replaces the strings '#000001' … '#000010' with its own palette, and Magma starts at '#000004')."""
    if isinstance(colour, str) and len(colour) == 7 and colour.startswith("#"):
        return f"rgb({int(colour[1:3], 16)}, {int(colour[3:5], 16)}, {int(colour[5:7], 16)})"
    return colour


def _layout(fig: go.Figure, title: str, width: int = 720, height: int = 460, subtitle: str = "", **kw) -> go.Figure:
    for trace in fig.data:  # every colour scale spelled out in rgb(): drawn the same on screen and in exports
        scale = getattr(trace, "colorscale", None)
        if scale:
            trace.colorscale = [[stop, _rgb(colour)] for stop, colour in scale]
    text = title + (f"<br><span style='font-size:12px;color:#555'>{subtitle}</span>" if subtitle else "")
    kw.setdefault("legend", dict(font=dict(size=12)))
    fig.update_layout(template="simple_white", font=FONT, title=dict(text=text, x=0.01, font=dict(size=16)),
                      width=width, height=height, margin=dict(l=70, r=30, t=64 + 18 * (subtitle.count('<br>') + 1) if subtitle else 60, b=60), **kw)
    return fig


def conflict_extent(record: dict, form: str = "loss") -> float:
    """The largest |C_{j|i}| of a record, in the figure's units (for a colour scale shared by several figures)."""
    scale = 100.0 if form == "accuracy" else 1.0
    return max([abs(scale * v) for row in record[form] for v in row if v is not None] or [1.0])


def conflict_figure(record: dict, form: str = "loss", bound: float | None = None) -> go.Figure:
    """Heatmap of C_{j|i}: rows j (the task that suffers), columns i (the task added).

    ``bound`` fixes the symmetric colour range (to compare figures side by side); default: this record's extent.
    """
    if form not in ("loss", "accuracy"):
        raise TatrError(f"form must be 'loss' or 'accuracy', got '{form}'")
    tasks = record["tasks"]
    scale = 100.0 if form == "accuracy" else 1.0
    z = [[None if v is None else scale * v for v in row] for row in record[form]]
    hover = []
    for j, tj in enumerate(tasks):
        row = []
        for i, ti in enumerate(tasks):
            if i == j:
                row.append("")
                continue
            key = "loss" if form == "loss" else "accuracy"
            full, without = record["full"], record["without"].get(ti)
            if full is None or without is None:  # a merge still to come, or one that failed
                row.append(f"adding {ti} → {tj}<br>not computed")
                continue
            a, b = full[tj][key], without[tj][key]
            row.append(f"adding {ti} → {tj}<br>{key} with all: {scale * a:.3f}<br>{key} without {ti}: {scale * b:.3f}")
        hover.append(row)
    missing = sum(v is None for j, row in enumerate(z) for i, v in enumerate(row) if i != j)
    bound = bound if bound is not None else conflict_extent(record, form)
    unit = "Δ loss (nats)" if form == "loss" else "accuracy lost (points)"
    fig = go.Figure(go.Heatmap(z=z, x=tasks, y=tasks, colorscale="RdBu_r", zmin=-bound, zmax=bound,
                               text=hover, hoverinfo="text", colorbar=dict(title=dict(text=unit, side="right")),
                               texttemplate="%{z:.2f}" if len(tasks) <= 10 else None))
    total = record["total_loss"] if form == "loss" else 100 * record["total_accuracy"]
    fig.update_yaxes(autorange="reversed", title="task j (affected)")
    fig.update_xaxes(title="task i (added to the merge)", tickangle=-30)
    params = params_text(record["params"])
    so_far = f" over the {len(tasks) * (len(tasks) - 1) - missing} entries so far" if missing else ""
    total_unit = "nats" if form == "loss" else "accuracy points"
    return _layout(fig, f"Knowledge conflict C<sub>j|i</sub> ({form} form), total C = {total:+.2f} {total_unit}{so_far}",
                   subtitle=(f"{record['method']}: {params}" if params else record["method"]) + "; evaluated in float32",
                   width=760, height=640)


def cosine_figure(record: dict) -> go.Figure:
    """Pairwise cosine similarity of the task vectors (from :func:`analysis.geometry.task_vector_geometry`)."""
    tasks = record["tasks"]
    fig = go.Figure(go.Heatmap(z=record["cosine"], x=tasks, y=tasks, colorscale="RdBu_r", zmin=-1, zmax=1,
                               texttemplate="%{z:.2f}", colorbar=dict(title=dict(text="cosine", side="right")),
                               hovertemplate="cos(Δ %{y}, Δ %{x}) = %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(tickangle=-30)
    return _layout(fig, "Cosine similarity of the task vectors", width=640, height=560)


def coefficients_figure(learned: dict) -> go.Figure:
    """AdaMerging's learned coefficients: tasks × parameter tensors (layer-wise) or one bar per task (task-wise)."""
    tasks, coef = learned["tasks"], learned["coefficients"]
    if learned["granularity"] == "task" or len(coef[0]) == 1:
        fig = go.Figure(go.Bar(x=tasks, y=[row[0] for row in coef], marker_color=[task_colour(tasks, t) for t in tasks]))
        fig.update_yaxes(title="learned λ<sub>k</sub>", range=[0, 1])
        fig.update_xaxes(title="task")
        return _layout(fig, "AdaMerging: learned task-wise coefficients", width=760, height=420)
    fig = go.Figure(go.Heatmap(z=coef, x=learned["tensors"], y=tasks, colorscale="Viridis", zmin=0, zmax=1,
                               colorbar=dict(title=dict(text="λ", side="right")),
                               hovertemplate="%{y} · %{x}<br>λ = %{z:.3f}<extra></extra>"))
    fig.update_xaxes(title="layer (parameter tensor)", tickangle=-60, tickfont=dict(size=9))
    fig.update_yaxes(title="task", autorange="reversed")
    ent = learned["entropy"]
    return _layout(fig, "AdaMerging: learned layer-wise coefficients λ<sub>k,l</sub>", width=1100, height=520,
                   subtitle=f"mean prediction entropy {ent[0]:.3f} → {ent[-1]:.3f} nats over {len(ent)} steps")


def surgery_gap_figure(report: dict) -> go.Figure:
    """Representation Surgery: the L1 gap to the individual model's representation, before and after."""
    tasks = list(report["l1_before"])
    fig = go.Figure()
    fig.add_bar(name="merged encoder", x=tasks, y=[report["l1_before"][t] for t in tasks], marker_color="#999999")
    fig.add_bar(name="after surgery", x=tasks, y=[report["l1_after"][t] for t in tasks], marker_color=PALETTE[2])
    fig.update_yaxes(title="mean |ẑ − z<sub>individual</sub>|")
    fig.update_xaxes(title="task")
    return _layout(fig, "Representation Surgery: distance to the individual models' representations",
                   barmode="group", width=860, height=420)


def accuracy_bars_figure(records: dict[str, dict], title: str, subtitle: str = "") -> go.Figure:
    """Per-task accuracy of several evaluation records side by side (``{label: evaluate_method record}``)."""
    fixed = {"zero-shot": "#999999", "fine-tuned": "#000000"}
    fig = go.Figure()
    others = 0
    for label, rec in records.items():
        colour = fixed.get(label) or PALETTE[others % len(PALETTE)]
        others += label not in fixed
        tasks = list(rec["tasks"])
        fig.add_bar(name=label, x=tasks, y=[100 * rec["tasks"][t]["accuracy"] for t in tasks], marker_color=colour)
    fig.update_yaxes(title="test accuracy (%)", range=[0, 100])
    fig.update_xaxes(title="task")
    return _layout(fig, title, subtitle=subtitle, barmode="group", width=None, height=460)


def orthogonal_caption(fraction: float, product: str = "g ⊙ Δ") -> str:
    """How Δ⊥ was drawn, for every component figure's caption."""
    return f"Δ<sup>⊥</sup> = the {100 * fraction:g}% of non-zero entries with the smallest |{product}|"


MERGED_COMPONENT_LABELS = {"pretrained": f"{PRE} (zero-shot)", "all": "Task Arithmetic",
                           "positive": "θ<sup>pos</sup> (Δ⁺ merged)", "negative": "θ<sup>neg</sup> (Δ⁻ merged)",
                           "orthogonal": "θ<sup>orth</sup> (Δ<sup>⊥</sup> merged)"}


def merged_components_figure(record: dict) -> go.Figure:
    """Figure 2(a) as the paper draws it: per task, the accuracy of merged models built from one
    component of the task vectors (θ^c = θ_pre + λ Σ_k Δ_k ⊙ 1_c), beside zero-shot and Task Arithmetic."""
    tasks = record["tasks"]
    fig = go.Figure()
    for name, label in MERGED_COMPONENT_LABELS.items():
        row = record["models"][name]
        share = f" · {100 * row['norm_share']:.0f}% of ‖Δ‖²" if "norm_share" in row else ""
        fig.add_bar(name=f"{label}: {100 * row['average_accuracy']:.1f}{share}", x=[*tasks, "average"],
                    marker_color=COMPONENT_COLOURS[name],
                    y=[100 * row["tasks"][t]["accuracy"] for t in tasks] + [100 * row["average_accuracy"]])
    fig.update_yaxes(title="test accuracy (%)", range=[0, 100])
    fig.update_xaxes(title="task")
    p = record["params"]
    return _layout(fig, "Merging one component of the task vectors (Figure 2a)",
                   subtitle=f"λ = {p['lam']:g}; split by s = Σ<sub>i≠j</sub> ∇L<sub>j</sub> ⊙ Δ<sub>i</sub> over "
                            f"{p['exemplars']} exemplars; {orthogonal_caption(p['orthogonal_fraction'], 's')}",
                   barmode="group", width=960, height=480, legend=dict(font=dict(size=12), title_text="model: average"))


def per_task_components_figure(record: dict, metric: str = "accuracy") -> go.Figure:
    """Components per task: accuracy (or loss, ``metric="loss"``) on task j of θ_pre + λ·component of
    the other tasks' vector."""
    if metric not in ("accuracy", "loss"):
        raise TatrError(f"metric must be 'accuracy' or 'loss', got '{metric}'")
    tasks = record["tasks"]
    scale = 100.0 if metric == "accuracy" else 1.0
    fig = go.Figure()
    for comp in ("pretrained", "all", "positive", "negative", "orthogonal"):
        fig.add_bar(name=COMPONENT_LABELS[comp], x=tasks, marker_color=COMPONENT_COLOURS[comp],
                    y=[scale * record["per_task"][t][comp][metric] for t in tasks])
    if metric == "accuracy":
        fig.update_yaxes(title="accuracy on task j (%)", range=[0, 100])
    else:
        fig.update_yaxes(title="loss of task j (nats)", rangemode="tozero")
    fig.update_xaxes(title="task j")
    return _layout(fig, f"Components of the other tasks' vector, per task: {metric}",
                   subtitle=f"λ = {record['params']['lam']:g}; "
                            f"{orthogonal_caption(record['params']['orthogonal_fraction'], '∇L<sub>j</sub> ⊙ Δ')}",
                   barmode="group", width=860)


#: the landscape's colour bar, as a share of the plot area's height: the square plot's side at 560 × 640 px
#: (its y domain once the axes are made square; tests/test_figures_tables.py checks it in the browser's layout)
LANDSCAPE_BAR = 0.9


def landscape_figure(record: dict, task: str | None = None) -> go.Figure:
    """Contours of one task's loss (or the total) on the Δ⊥ / Δ⁺ / Δ⁻ plane, the points marked."""
    axis = record["axis"]
    z = record["total"] if task is None else record["loss"][task]
    which = "Total loss (sum over tasks)" if task is None else f"Loss of {task}"
    plane = ("the sum of all task vectors, split by the total-loss gradient" if record["task"] is None
             else f"the other tasks' vector, split by {record['task']}'s gradient")
    fig = go.Figure(go.Contour(x=axis, y=axis, z=z, colorscale="Viridis", ncontours=20,
                               colorbar=dict(title=dict(text="loss (nats)", side="right"), len=LANDSCAPE_BAR,
                                             y=0.5, yanchor="middle"),
                               hovertemplate="a=%{x:.2f}, b=%{y:.2f}<br>loss %{z:.3f}<extra></extra>"))
    # the four points in a legend under the plot: labels drawn at the points collide (θ_pre's projection
    # often lies next to θ_pre+Δ⁺)
    marks = {"orthogonal": (f"{PRE}+Δ<sup>⊥</sup> (0, 0)", "circle"), "positive": (f"{PRE}+Δ⁺ (1, 0)", "triangle-up"),
             "negative": (f"{PRE}+Δ⁻ (0, 1)", "triangle-down"), "pretrained": (f"{PRE}, projected", "star")}
    for key, (label, symbol) in marks.items():
        if key not in record.get("points", {}):  # a landscape still filling in: θ_pre's projection comes last
            continue
        x, y = record["points"][key]
        fig.add_scatter(x=[x], y=[y], mode="markers", name=label if key != "pretrained" else f"{label} ({x:.2f}, {y:.2f})",
                        marker=dict(symbol=symbol, size=13, color="white", line=dict(color="black", width=1.5)))
    fig.update_xaxes(title=f"a: toward {PRE}+Δ⁺", range=[axis[0], axis[-1]], constrain="domain")
    fig.update_yaxes(title=f"b: toward {PRE}+Δ⁻", range=[axis[0], axis[-1]], scaleanchor="x", constrain="domain")
    fraction = record["params"].get("orthogonal_fraction", 0.9)
    done = sum(v is not None for row in z for v in row)
    so_far = f"<b>{done} of {len(axis) ** 2} points so far</b> · " if done < len(axis) ** 2 else ""
    return _layout(fig, f"{which} on the Δ<sup>⊥</sup> / Δ⁺ / Δ⁻ plane",
                   subtitle=f"{so_far}plane of {plane}<br>{orthogonal_caption(fraction)}; losses in float32",
                   width=560, height=640, meta={"fixed_size": True},
                   legend=dict(orientation="h", x=0.0, y=-0.14, font=dict(size=12)))


def disentanglement_figure(record: dict) -> go.Figure:
    """ξ(α₁, α₂) of two tasks as a heatmap on an absolute scale (0: disentangled, 2: every prediction of both
    tasks changed), with Task Arithmetic's region [0, 1]² outlined."""
    axis, (a, b) = record["axis"], record["tasks"]
    xi = record["xi"]
    hover = [[f"α₁ = {axis[i1]:g}, α₂ = {axis[i2]:g}<br>ξ = {'—' if xi[i2][i1] is None else f'{xi[i2][i1]:.3f}'}"
              + ("" if record["error"][a][i2][i1] is None else
                 f"<br>{a}: {100 * record['error'][a][i2][i1]:.1f}% of predictions changed"
                 f"<br>{b}: {100 * record['error'][b][i2][i1]:.1f}% changed")
              for i1 in range(len(axis))] for i2 in range(len(axis))]
    fig = go.Figure(go.Heatmap(x=axis, y=axis, z=xi, zmin=0, zmax=2, colorscale="Magma", reversescale=True,
                               text=hover, hoverinfo="text",
                               colorbar=dict(title=dict(text="ξ (0 to 2)", side="right"), len=LANDSCAPE_BAR,
                                             y=0.5, yanchor="middle")))
    half = 0.5 * _step(axis)
    unit = [a for a in axis if 0 <= a <= 1]
    if unit:  # the cells of α ∈ [0, 1]², outlined
        fig.add_shape(type="rect", x0=unit[0] - half, x1=unit[-1] + half, y0=unit[0] - half, y1=unit[-1] + half,
                      line=dict(color="#009E73", width=3, dash="dash"), fillcolor="rgba(0,0,0,0)")
        fig.add_scatter(x=[None], y=[None], mode="lines", line=dict(color="#009E73", width=3, dash="dash"),
                        name=f"Task Arithmetic's region, α ∈ [0, 1]²: mean ξ {record['mean_unit']:.3f}"
                        if record.get("mean_unit") is not None else "Task Arithmetic's region, α ∈ [0, 1]²")
    fig.update_xaxes(title=f"α₁: scale of τ({a})", range=[axis[0] - half, axis[-1] + half], constrain="domain")
    fig.update_yaxes(title=f"α₂: scale of τ({b})", range=[axis[0] - half, axis[-1] + half], scaleanchor="x",
                     constrain="domain")
    done = sum(v is not None for row in xi for v in row)
    so_far = f"<b>{done} of {len(axis) ** 2} points so far</b> · " if done < len(axis) ** 2 else ""
    images = record.get("images") or {}
    sample = (f"{' and '.join(str(images[t]) for t in (a, b))} {record['split']} images" if len(images) == 2
              else f"the {record['split']} split")
    return _layout(fig, f"Weight disentanglement ξ(α₁, α₂): {a} and {b}",
                   subtitle=f"{so_far}share of each task's predictions that adding the other task's vector changes, "
                            f"summed<br>(Ortiz-Jiménez et al., 2023); {sample}",
                   width=560, height=640, meta={"fixed_size": True}, showlegend=True,
                   legend=dict(orientation="h", x=0.0, y=-0.14, font=dict(size=12)))


def _step(axis: list[float]) -> float:
    return axis[1] - axis[0] if len(axis) > 1 else 1.0


def layer_sensitivity_figure(record: dict, by: str = "tensor") -> go.Figure:
    """Figure 4: per-task sensitivity Σ_{i≠j}|G_j|⊙|Δ_i| per layer (log colour scale), tasks × layers."""
    tasks = record["tasks"]
    if by == "block":
        cols = list(record["block_omega"])
        z = [[record["block_per_task"][t][c] for c in cols] for t in tasks]
    else:
        cols = record["tensors"]
        z = [record["per_task"][t] for t in tasks]
    logz = [[math.log10(v) if v > 0 else None for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=logz, x=cols, y=tasks, colorscale="Magma",
                               colorbar=dict(title=dict(text="log10 mean sensitivity", side="right")),
                               customdata=z, hovertemplate="%{y} · %{x}<br>%{customdata:.3e}<extra></extra>"))
    fig.update_xaxes(title="layer (parameter tensor)" if by == "tensor" else "block", tickangle=-60,
                     tickfont=dict(size=9 if by == "tensor" else 12))
    fig.update_yaxes(title="task j", autorange="reversed")
    return _layout(fig, f"Sensitivity of each task to the other task vectors "
                        f"({record['params']['variant']}, {record['params']['exemplars']} exemplars)",
                   width=1100 if by == "tensor" else 760, height=520)


def excluded_figure(record: dict, by: str = "tensor") -> go.Figure:
    """Fraction of each tensor (or block) outside the trust region at the record's τ."""
    if by == "block":
        x, y = list(record["block_excluded"]), list(record["block_excluded"].values())
    else:
        x, y = record["tensors"], record["excluded"]
    fig = go.Figure(go.Bar(x=x, y=[100 * v for v in y], marker_color=PALETTE[3]))
    fig.update_xaxes(title="layer (parameter tensor)" if by == "tensor" else "block", tickangle=-60,
                     tickfont=dict(size=9 if by == "tensor" else 12))
    fig.update_yaxes(title="excluded from the trust region (%)")
    return _layout(fig, f"Where the trust region cuts (τ = {100 * record['params']['tau']:g}%, "
                        f"{record['excluded_total']:,} of {record['N']:,} dimensions)",
                   width=1100 if by == "tensor" else 760)


def omega_histogram_figure(record: dict) -> go.Figure:
    """Distribution of Ω over all dimensions (log10 bins, log count axis) with the top-τ threshold of Eq. 9."""
    h = record["histogram"]
    edges, counts = h["log10_edges"], h["counts"]
    centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    fig = go.Figure(go.Bar(x=centres, y=counts, marker_color=PALETTE[0], marker_line_width=0,
                           hovertemplate="log10 Ω ≈ %{x:.2f}<br>%{y:,} dimensions<extra></extra>"))
    fig.update_xaxes(title=f"log10 Ω ({record['params']['variant']} sensitivity)")
    fig.update_yaxes(title="dimensions", type="log")
    if h["threshold"] is not None and h["threshold"] > 0:
        x = math.log10(h["threshold"])
        fig.add_vline(x=x, line=dict(color=PALETTE[3], width=2, dash="dash"))
        fig.add_annotation(x=x, y=1, yref="paper", xanchor="left", yanchor="top", showarrow=False,
                           text=f" top {100 * record['params']['tau']:g}% excluded →", font=dict(color=PALETTE[3]))
    other = []
    if h["zeros"]:
        other.append(f"{h['zeros']:,} with Ω = 0")
    if h["negative"]:
        other.append(f"{h['negative']:,} with Ω < 0")
    return _layout(fig, "Distribution of Ω over all dimensions", width=760, bargap=0,
                   subtitle=(f"{h['n']:,} dimensions; not shown: " + ", ".join(other)) if other
                   else f"{h['n']:,} dimensions")


SWEEP_AXES = {"tau": ("τ: fraction of dimensions excluded (%)", 100.0), "lam": ("λ", 1.0),
              "exemplars": ("exemplars per task", 1.0)}


def _declared_label(method: str, parameter: str) -> str:
    param = REGISTRY[method].declared[parameter]
    return param.label or param.name


METHOD_DASHES = ["dot", "dash", "dashdot", "longdash", "longdashdot"]  #: per-task lines: one dash style per method


def params_text(params: dict) -> str:
    """A run's parameters as figures print them: λ and τ by their symbols, τ in % (as on every slider)."""
    parts = []
    for k, v in params.items():
        if k == "tau":
            parts.append(f"τ = {100 * v:g}%")
        elif k == "lam":
            parts.append(f"λ = {v:g}")
        else:
            parts.append(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}")
    return ", ".join(parts)


def setting_text(method: str, params: dict, swept: str) -> str:
    """The parameters that matter for a curve, as a reader wants them: "λ = 0.3, τ = 1%"."""
    spec = REGISTRY.get(method)
    parts = []
    if swept != "lam" and params.get("lam") is not None and spec is not None and spec.default_lam is not None:
        parts.append(f"λ = {params['lam']:g}")
    if swept != "tau" and params.get("tau"):
        parts.append(f"τ = {100 * params['tau']:g}%")
    if params.get("tau") or swept == "tau":
        if params.get("sensitivity") not in (None, "gradient"):
            parts.append(f"{params['sensitivity']} Ω")
    if swept != "exemplars" and params.get("exemplars") and (params.get("tau") or swept == "tau") \
            and params.get("sensitivity") not in ("zero-shot",):
        parts.append(f"{params['exemplars']} exemplars")
    return ", ".join(parts)


def sweep_figure(records: list[dict] | dict, per_task: bool = False) -> go.Figure:
    """Average accuracy (and optionally each task's) against the swept parameter; several methods overlaid.

    Legends use the methods' display names and the parameters each curve was run at (λ, τ, ...);
    a validation curve is dashed beside its test curve; per-task lines take the task's colour and
    one dash style per method."""
    records = [records] if isinstance(records, dict) else records
    parameter = records[0]["parameter"]
    title, scale = SWEEP_AXES.get(parameter) or (_declared_label(records[0]["method"], parameter), 1.0)
    fig = go.Figure()
    splits = {rec["fixed"].get("split") or "test" for rec in records}
    curves: list[tuple] = []  # one colour per method and setting; its validation curve dashed beside the test one
    for rec in records:
        shown = {k: v for k, v in rec["fixed"].items() if v is not None and k not in ("split", "sample", "seed")}
        curve = (rec["method"], tuple(sorted(shown.items())))
        if curve not in curves:
            curves.append(curve)
        n = curves.index(curve)
        split = rec["fixed"].get("split") or "test"
        colour = PALETTE[n % len(PALETTE)]
        xs = [scale * p["value"] for p in rec["points"]]
        name = REGISTRY[rec["method"]].label if rec["method"] in REGISTRY else rec["method"]
        setting = setting_text(rec["method"], rec["points"][0].get("params", {}) if rec["points"] else shown, parameter)
        label = name + (f" ({setting})" if setting else "")
        fig.add_scatter(x=xs, y=[100 * p["average_accuracy"] for p in rec["points"]], mode="lines+markers",
                        name=label + (f": {'validation' if split == 'val' else 'test'}" if len(splits) > 1 else ""),
                        line=dict(width=3 if split == "test" else 2, color=colour, dash="solid" if split == "test" else "dash"),
                        marker=dict(symbol="circle" if split == "test" else "circle-open"))
        if per_task and split == "test":
            tasks = list(rec["points"][0]["tasks"]) if rec["points"] else []
            for t in tasks:
                fig.add_scatter(x=xs, y=[100 * p["tasks"][t]["accuracy"] for p in rec["points"]], mode="lines",
                                name=f"{name}: {t}", legendgroup=f"tasks-{n}",
                                line=dict(width=1.5, dash=METHOD_DASHES[n % len(METHOD_DASHES)],
                                          color=task_colour(tasks, t)))
    fig.update_xaxes(title=title, type="log" if parameter == "exemplars" else "linear")
    fig.update_yaxes(title="accuracy (%): test solid, validation dashed" if len(splits) > 1
                     else f"{'validation' if splits == {'val'} else 'test'} accuracy (%)")
    what = {"tau": "τ", "lam": "λ", "exemplars": "the exemplar count"}.get(parameter, title)
    # the legend under the plot, where long names and many per-task lines fit (to the right they were clipped)
    many = per_task or sum(len(d.name or "") for d in fig.data) > 160
    return _layout(fig, f"Accuracy against {what}", width=860, height=460 + (22 * ((len(fig.data) + 1) // 2) if many else 0),
                   legend=dict(orientation="h", x=0.0, y=-0.18, font=dict(size=12)) if many else dict(font=dict(size=12)))


def tsv_default_layer(record: dict) -> str:
    """The layer the TSV figure shows unless told: the first MLP input matrix (``mlp.c_fc`` in open_clip)."""
    return next((layer for layer in record["layers"] if "mlp.c_fc" in layer), record["layers"][0])


def tsv_spectrum_figure(record: dict, layer: str | None = None, per_layer: bool = False) -> go.Figure:
    """Normalised singular-value spectra of each task's matrix in one layer, and the singular task
    interference between tasks: its mean over the layers, or (``per_layer``) that layer's own."""
    tasks = record["tasks"]
    if not record["layers"]:
        raise TatrError("this zoo's merged parameters hold no 2-D tensor, so it has no singular vectors to show")
    layer = layer or tsv_default_layer(record)
    if layer not in record["spectra"]:
        raise TatrError(f"no 2-D layer '{layer}'; choose one of {', '.join(record['layers'][:5])}, ...")
    where = f"in {layer}" if per_layer else "mean over layers"
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.14,
                        subplot_titles=(f"spectra of ΔW in {layer}", f"singular task interference ({where})"))
    for t in tasks:
        s = record["spectra"][layer][t]
        fig.add_scatter(x=list(range(1, len(s) + 1)), y=s, mode="lines", name=t,
                        line=dict(color=task_colour(tasks, t), width=2), row=1, col=1)
    z = record["per_layer"][layer] if per_layer else record["interference"]
    fig.add_heatmap(z=z, x=tasks, y=tasks, colorscale="Blues", row=1, col=2,
                    hovertemplate="tasks %{y} and %{x}: %{z:.4g}<extra></extra>",
                    colorbar=dict(title=dict(text="STI", side="right"), x=1.02))
    fig.update_xaxes(title_text="singular value index", type="log", row=1, col=1)
    fig.update_yaxes(title_text="σ / σ₁", type="log", row=1, col=1)
    fig.update_yaxes(autorange="reversed", row=1, col=2)
    fig.update_xaxes(tickangle=-30, row=1, col=2)
    return _layout(fig, f"Task singular vectors (rank kept for interference: {100 * record['rank_fraction']:.0f}%)",
                   width=1150, height=560, legend=dict(orientation="h", x=0.0, y=-0.22, font=dict(size=12)))


def panels_figure(panels: list[go.Figure], names: list[str], title: str) -> go.Figure:
    """Figures side by side in one, as a paper lays out a multi-panel figure: each panel's traces, axes titles
    and axis types; one legend (a trace named alike in two panels is listed once)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=names, horizontal_spacing=0.1)
    seen: set[str] = set()
    for col, panel in enumerate(panels, start=1):
        for trace in panel.data:
            trace = go.Figure(trace).data[0]  # a copy
            trace.showlegend = trace.name not in seen
            seen.add(trace.name)
            fig.add_trace(trace, row=1, col=col)
        fig.update_xaxes(title=panel.layout.xaxis.title.text, type=panel.layout.xaxis.type, row=1, col=col)
        fig.update_yaxes(title=panel.layout.yaxis.title.text if col == 1 else None, row=1, col=col)
    return _layout(fig, title, width=420 * len(panels) + 80, height=440,
                   legend=dict(orientation="h", x=0.0, y=-0.22, font=dict(size=12)))
