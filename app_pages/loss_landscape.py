"""Loss Landscape (Figure 2, Appendix B.1): per-task and total loss over the plane through
θ_pre+Δ⊥, θ_pre+Δ⁺ and θ_pre+Δ⁻, with the three points and θ_pre's projection marked (Figure 2b/c),
and the merged models built from one component, θ^pos / θ^neg / θ^orth (Figure 2a)."""
import streamlit as st

from tatr_core.analysis.components import grid_axis, landscape_spec, merged_components_spec
from tatr_core.figures import landscape_figure, merged_components_figure
from tatr_core.figures.registry import stem
from tatr_core.ui import learn_text
from tatr_core.ui.controls import control, orthogonal_fraction_control
from tatr_core.ui.downloads import show_figure
from tatr_core.ui.errors import friendly_errors
from tatr_core.ui.jobs import analysis, expected_text, show_failed
from tatr_core.ui.session import current_zoo

st.title("Loss Landscape")
st.latex(r"\theta(a, b) = \theta_{pre} + \Delta^{\perp} + a\,(\Delta^{+} - \Delta^{\perp}) + b\,(\Delta^{-} - \Delta^{\perp})")
st.caption("Δ⁺ / Δ⁻ / Δ⊥: the parts of the task vectors whose product with the loss gradient E∇L ⊙ Δ is positive, "
           "negative, or among the smallest in magnitude (orthogonal). Moving along Δ⊥ barely changes the loss; "
           "along Δ⁺ it rises. Every grid point is one merged model evaluated on 200 test images per task.")

with friendly_errors():
    zoo, evaluator = current_zoo()

STEPS = [0.2, 0.1, 0.05]
with st.sidebar:
    planes = ["total"] + zoo.task_names
    plane = st.selectbox("plane", planes, key=control("ls-plane", "total", planes),
                         format_func=lambda p: "all task vectors, total-loss gradient" if p == "total"
                         else f"other tasks' vectors, split by {p}'s gradient")
    step = st.select_slider("grid resolution", STEPS, key=control("ls-step", 0.2, STEPS),
                            format_func=lambda s: f"{len(grid_axis(step=s))}×{len(grid_axis(step=s))}",
                            help="points per axis over [-0.2, 1.2]; each point is one merged model evaluated on 200 "
                                 "test images per task (in the background, with a time estimate)")
    fraction = orthogonal_fraction_control("ls-orthogonal")
    st.caption(expected_text(zoo, landscape_spec(zoo, None if plane == "total" else plane, step=step,
                                                 orthogonal_fraction=fraction)))
    default_task = zoo.task_names[0] if plane == "total" else plane
    shown = st.selectbox("task loss shown beside the total", zoo.task_names,
                         key=control("ls-task", default_task, zoo.task_names))

n = len(grid_axis(step=step))
top, bottom = st.container(), st.container()  # drawn in this order; the quick Figure 2(a) is asked for first
task_plane = None if plane == "total" else plane

with bottom:
    st.subheader("Merging one component (Figure 2a)")
    st.caption("θ^c = θ_pre + λ Σ_k Δ_k ⊙ 1_c: the summed task vectors restricted to one component, split by the "
               "cross-task product s = Σ_(i≠j) ∇L_j ⊙ Δ_i (Table 6's signed sensitivity), evaluated on every task's "
               "test split.")
    with friendly_errors():
        merged = analysis(zoo, merged_components_spec(zoo, orthogonal_fraction=fraction), evaluator)
    if merged is not None:
        st.markdown(learn_text.figure2a(merged))
        show_figure(merged_components_figure(merged), "ls-merged-components",
                    stem("components", {"orthogonal_fraction": fraction}))
        show_failed(merged)

def draw(record: dict, live: bool = False) -> None:
    """Both landscapes; while points arrive (``live``), the part computed so far (no downloads yet)."""
    left, right = st.columns(2)
    for col, task, name in ((left, None, "total"), (right, shown, shown)):
        with col:
            fig = landscape_figure(record, task)
            params = {"task": task_plane, "loss": name, "step": step, "orthogonal_fraction": fraction}
            show_figure(fig, f"ls-{'live-' if live else ''}{name}", None if live else stem("landscape", params))


with top:
    with friendly_errors():
        record = analysis(zoo, landscape_spec(zoo, task_plane, step=step, orthogonal_fraction=fraction), evaluator,
                          show_partial=lambda partial: draw(partial, live=True))
    if record is not None:
        draw(record)
        show_failed(record)
        pa, pb = record["points"]["pretrained"]
        st.caption(f"Norms: ‖Δ⊥‖ = {record['norms']['orthogonal']:.3g}, ‖Δ⁺‖ = {record['norms']['positive']:.3g}, "
                   f"‖Δ⁻‖ = {record['norms']['negative']:.3g}. θ_pre lies off the plane; its least-squares projection "
                   f"is at (a, b) = ({pa:.2f}, {pb:.2f}).")
