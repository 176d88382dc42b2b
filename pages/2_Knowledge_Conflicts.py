"""Knowledge Conflicts: C_{j|i} (Definition 1 / Eq. 3) for two methods side by side, in loss or
accuracy form; hovering an entry shows the two evaluations it is the difference of."""
import streamlit as st

from tatr_core.analysis.conflict import conflict_matrix
from tatr_core.figures import conflict_extent, conflict_figure
from tatr_core.merge import REGISTRY
from tatr_core.ui import current_zoo, figure_downloads, friendly_errors

st.set_page_config(page_title="Knowledge Conflicts · TATR Studio", layout="wide")
st.title("Knowledge Conflicts")
st.latex(r"\mathcal{C}_{j|i} = L_j\big(\theta_{MTL}(\{\theta_k\}_{k=1}^K)\big) - L_j\big(\theta_{MTL}(\{\theta_k\}_{k\neq i})\big)")
st.caption("How much adding task i to the merge (column) raises task j's loss (row); red is conflict. "
           "Each method is re-run on every leave-one-out set (K + 1 merges).")

with friendly_errors():
    zoo, evaluator = current_zoo()

methods = list(REGISTRY)
with st.sidebar:
    form = st.radio("Form", ["loss", "accuracy"], horizontal=True, key="conflict-form",
                    help="loss: increase in cross-entropy; accuracy: points of accuracy lost")
    left_method = st.selectbox("Left", methods, index=methods.index("task_arithmetic"), key="conflict-left",
                               format_func=lambda m: REGISTRY[m].label)
    right_method = st.selectbox("Right", methods, index=methods.index("tatr"), key="conflict-right",
                                format_func=lambda m: REGISTRY[m].label)
    tau_pct = st.select_slider("τ for TATR-style methods (%)", [0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0], value=1.0,
                               key="conflict-tau")

columns = st.columns(2)
records = []
for col, side, method in zip(columns, ("left", "right"), (left_method, right_method)):
    with col, friendly_errors():
        kw = {"tau": tau_pct / 100} if method == "tatr" else {}
        bar = st.progress(0.0, text=f"{REGISTRY[method].label}: K + 1 merges")
        records.append((side, method, conflict_matrix(zoo, method, evaluator=evaluator,
                                                      progress=lambda f, m: bar.progress(f, text=m), **kw)))
        bar.empty()
bound = max(conflict_extent(r, form) for _, _, r in records)  # one colour scale for both sides
for col, (side, method, record) in zip(columns, records):
    with col:
        total = record["total_loss"] if form == "loss" else 100 * record["total_accuracy"]
        st.metric(f"{REGISTRY[method].label}: total C ({form})", f"{total:+.2f}")
        fig = conflict_figure(record, form, bound)
        fig.update_layout(width=None)
        st.plotly_chart(fig, width="stretch", key=f"conflict-fig-{side}")
        figure_downloads(fig, f"conflict-{side}-{method}-{form}")
