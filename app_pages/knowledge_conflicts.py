"""Knowledge Conflicts: C_{j|i} (Definition 1 / Eq. 3) for two methods side by side, in loss or
accuracy form (hovering an entry shows the two evaluations it is the difference of); below, the same
question in weight space: the tasks' singular-value spectra and their singular task interference (TSV);
last, in function space: the weight-disentanglement error ξ(α₁, α₂) of two tasks."""
import streamlit as st

from tatr_core.analysis.components import grid_axis
from tatr_core.analysis.conflict import conflict_spec
from tatr_core.analysis.disentanglement import disentanglement_spec
from tatr_core.analysis.tsv_view import tsv_spec
from tatr_core.figures import (conflict_extent, conflict_figure, disentanglement_figure, tsv_default_layer,
                               tsv_spectrum_figure)
from tatr_core.figures.registry import stem
from tatr_core.merge import REGISTRY
from tatr_core.ui.controls import TAU_CHOICES, control
from tatr_core.ui.downloads import show_figure
from tatr_core.ui.errors import friendly_errors
from tatr_core.ui.jobs import analysis, show_failed
from tatr_core.ui.session import current_zoo

st.title("Knowledge Conflicts")
st.latex(r"\mathcal{C}_{j|i} = L_j\big(\theta_{MTL}(\{\theta_k\}_{k=1}^K)\big) - L_j\big(\theta_{MTL}(\{\theta_k\}_{k\neq i})\big)")
st.caption("How much adding task i to the merge (column) raises task j's loss (row); red is conflict. "
           "Each method is re-run on every leave-one-out set (K + 1 merges).")

with friendly_errors():
    zoo, evaluator = current_zoo()

methods = list(REGISTRY)
with st.sidebar:
    form = st.radio("Form", ["loss", "accuracy"], horizontal=True, key=control("conflict-form", "loss", ["loss", "accuracy"]),
                    help="loss: increase in cross-entropy; accuracy: points of accuracy lost")
    left_method = st.selectbox("Left", methods, key=control("conflict-left", "task_arithmetic", methods),
                               format_func=lambda m: REGISTRY[m].label)
    right_method = st.selectbox("Right", methods, key=control("conflict-right", "tatr", methods),
                                format_func=lambda m: REGISTRY[m].label)
    tau_pct = st.select_slider("τ for TATR (%)", TAU_CHOICES, key=control("conflict-tau", 1.0, TAU_CHOICES))

# side by side only while the heatmaps stay legible at half width; stacked at full width beyond 5 tasks
columns = st.columns(2) if len(zoo.task_names) <= 5 else [st.container(), st.container()]
records = []
for col, side, method in zip(columns, ("left", "right"), (left_method, right_method)):
    if REGISTRY[method].uses_data:
        col.caption(f"{REGISTRY[method].label} learns from the tasks' images, once per merge: K + 1 fits "
                    "(cached afterwards).")
    kw = {"tau": tau_pct / 100} if method == "tatr" else {}
    with col, friendly_errors():
        spec = conflict_spec(zoo, method, **kw)
        record = analysis(zoo, spec, evaluator, label=f"{REGISTRY[method].label}: K + 1 merges",
                          show_partial=lambda partial, side=side: show_figure(conflict_figure(partial, form),
                                                                              f"conflict-live-{side}"))
    records.append((col, side, method, kw, record))
ready = [r for *_, r in records if r is not None]
bound = max(conflict_extent(r, form) for r in ready) if ready else None  # one colour scale for both sides
for col, side, method, kw, record in records:
    if record is None:
        continue
    with col:
        total = record["total_loss"] if form == "loss" else 100 * record["total_accuracy"]
        st.metric(f"{REGISTRY[method].label}: total C ({form})", f"{total:+.2f}")
        fig = conflict_figure(record, form, bound)
        show_figure(fig, f"conflict-fig-{side}", stem("conflict", {"method": method, "form": form, **kw}))
        show_failed(record)

st.header("In weight space: task singular vectors")
st.caption("Each task matrix ΔW = U Σ Vᵀ, per 2-D tensor. Left: how fast each task's singular values fall, so how "
           "low-rank its update is. Right: the singular task interference ‖(UᵀU − I) Σ (VᵀV − I)‖₁ of two tasks' top "
           "10% singular vectors (Gargiulo et al., 2025), 0 when they are orthogonal. No images are needed: it reads "
           "the weights only. TSV-M orthogonalises these vectors to remove it.")
with friendly_errors():
    view = analysis(zoo, tsv_spec(zoo))
if view is not None and view["layers"]:
    left, right = st.columns([3, 1])
    layer = left.selectbox("Layer", view["layers"], key=control("tsv-layer", tsv_default_layer(view), view["layers"]),
                           help="the 2-D tensor whose spectra are drawn")
    scope = right.radio("Interference", ["mean over layers", "this layer"], horizontal=False,
                        key=control("tsv-scope", "mean over layers", ["mean over layers", "this layer"]))
    with friendly_errors():
        shown = {"layer": layer, "layer_interference": scope == "this layer"}
        show_figure(tsv_spectrum_figure(view, layer, per_layer=scope == "this layer"), "tsv-fig",
                    stem("tsv-spectrum", shown))
elif view is not None:
    st.info("This zoo's merged parameters hold no 2-D tensor, so there are no singular vectors to show.")

st.header("Do the task vectors stay out of each other's way? Weight disentanglement")
st.caption("Task arithmetic works when adding task 2's vector leaves the predictions on task 1's images alone, and "
           "the other way round (Ortiz-Jiménez et al., 2023). ξ(α₁, α₂) counts, on each task's images, the share of "
           "predictions of θ_pre + α_t τ_t that change when the other task's vector is added too, summed over the two "
           "tasks: 0 is perfectly disentangled, 2 changes every prediction. The dashed square is where Task "
           "Arithmetic works (α ∈ [0, 1]).")
st.latex(r"\xi(\alpha_1,\alpha_2)=\sum_{t=1}^{2}\mathbb{E}_{x\sim\mu_t}\Big[\mathbb{1}\big[f(x;\theta_{pre}+\alpha_t\tau_t)"
         r"\neq f(x;\theta_{pre}+\alpha_1\tau_1+\alpha_2\tau_2)\big]\Big]")
names = zoo.task_names
first, second, third = st.columns(3)
task_a = first.selectbox("Task 1", names, key=control("xi-first", names[0], names))
others = [t for t in names if t != task_a]
task_b = second.selectbox("Task 2", others, key=control("xi-second", others[0], others))  # reset if task 1 took it
steps = [1.0, 0.5]
xi_step = third.selectbox("Grid over [−3, 3]²", steps, key=control("xi-step", 1.0, steps),
                          format_func=lambda s: f"{len(grid_axis(-3, 3, s))}×{len(grid_axis(-3, 3, s))} (step {s:g})",
                          help="13×13 is the paper's grid; each point is a merged model evaluated on both tasks")
with friendly_errors():
    xi_spec = disentanglement_spec(zoo, [task_a, task_b], step=xi_step)
n_xi = len(xi_spec.arguments["axis"])
xi_on = st.toggle(f"Compute ξ for {task_a} and {task_b} ({n_xi}×{n_xi} merged models, each evaluated on both tasks)",
                  key=control("xi-on", False, [True, False]),
                  help="off until asked for: the grid is the heaviest computation of this page; once computed it is "
                       "cached and shown at once")
xi = None
if xi_on:
    with friendly_errors():
        xi = analysis(zoo, xi_spec, evaluator, label=f"ξ of {task_a} and {task_b}: {n_xi}×{n_xi} merged models",
                      show_partial=lambda partial: show_figure(disentanglement_figure(partial), "xi-live"))
if xi is not None:
    left, right = st.columns([3, 1])
    with left:
        show_figure(disentanglement_figure(xi), "xi-fig",
                    stem("disentanglement", {"tasks": [task_a, task_b], "step": xi_step}))
    right.metric("mean ξ, α ∈ [0, 1]²", f"{xi['mean_unit']:.3f}",
                 help="the average of ξ over the grid points where both scales lie in [0, 1], Task Arithmetic's range")
    right.metric("mean ξ, whole grid", f"{xi['mean']:.3f}")
    show_failed(xi)
