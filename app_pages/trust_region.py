"""Trust Region: which dimensions TATR excludes and why — per-layer sensitivity of each task to the
other task vectors (Figure 4), the fraction of each layer excluded at τ, and the distribution of Ω."""
import streamlit as st

from tatr_core.analysis.layers import layers_spec
from tatr_core.figures import excluded_figure, layer_sensitivity_figure, omega_histogram_figure
from tatr_core.figures.registry import stem
from tatr_core.trust_region import SENSITIVITIES
from tatr_core.ui.controls import EXEMPLAR_CHOICES, TAU_CHOICES, control
from tatr_core.ui.downloads import show_figure
from tatr_core.ui.errors import friendly_errors
from tatr_core.ui.jobs import analysis
from tatr_core.ui.session import current_zoo

st.title("Trust Region")
st.caption("Eq. 8 and Eq. 9: a dimension where some task vector moves far along another task's steep loss "
           "direction is outside the trust region and is not merged. The variants of Table 6 change Ω; the "
           "signed ones (positive, negative) merge only the dimensions whose Ω is positive, as Appendix C.4 "
           "describes, whatever τ > 0 is.")

with friendly_errors():
    zoo, evaluator = current_zoo()

with st.sidebar:
    variant = st.selectbox("sensitivity Ω", list(SENSITIVITIES), key=control("tr-sensitivity", "gradient", SENSITIVITIES),
                           help="; ".join(f"{s.name}: {s.summary}" for s in SENSITIVITIES.values()))
    tau_pct = st.select_slider("τ: excluded (%)", TAU_CHOICES[1:], key=control("tr-tau", 1.0, TAU_CHOICES[1:]))
    exemplars = st.select_slider("exemplars per task", EXEMPLAR_CHOICES,
                                 key=control("tr-exemplars", 128, EXEMPLAR_CHOICES),
                                 help="images per task behind the mean absolute gradients E|∇ℓ_j(θ_pre; x)| (each exemplar's "
                                      "gradient taken in absolute value, then averaged)")
    by = st.radio("layers", ["block", "tensor"], horizontal=True, key=control("tr-by", "block", ["block", "tensor"]),
                  help="block: embeddings, each transformer block, the head; tensor: every parameter tensor")

st.latex(r"\Omega = " + SENSITIVITIES[variant].formula +
         r"\qquad m = \mathbb{1}\big[\Omega < \text{top-}\tau\text{ threshold}\big]")
with friendly_errors():
    record = analysis(zoo, layers_spec(zoo, variant, tau_pct / 100, exemplars), evaluator)
if record is None:
    st.stop()  # the job fills the page when it is done

h = record["histogram"]
c1, c2, c3 = st.columns(3)
c1.metric("excluded dimensions", f"{record['excluded_total']:,}", f"{100 * record['excluded_total'] / record['N']:.2f}% of {record['N']:,}",
          delta_color="off", delta_arrow="off")
c2.metric("threshold Ω", "—" if h["threshold"] is None else f"{h['threshold']:.3e}")
most = max(record["block_excluded"], key=record["block_excluded"].get)
c3.metric("most excluded block", most, f"{100 * record['block_excluded'][most]:.2f}% of it", delta_color="off",
          delta_arrow="off")

shown = {"sensitivity": variant, "tau": tau_pct / 100, "exemplars": exemplars, "by": by}
fig = layer_sensitivity_figure(record, by)
show_figure(fig, "tr-heatmap", stem("layer-sensitivity", shown))

left, right = st.columns(2)
with left:
    fig = excluded_figure(record, by)
    show_figure(fig, "tr-excluded", stem("excluded", shown))
with right:
    fig = omega_histogram_figure(record)
    show_figure(fig, "tr-histogram", stem("omega-histogram", {k: v for k, v in shown.items() if k != "by"}))
