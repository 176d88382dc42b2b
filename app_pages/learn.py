"""Learn: a short guided tour for teaching — task vectors, Task Arithmetic, knowledge conflict, why
the orthogonal component is safe, and the trust region — each with a live example on the zoo; last,
which of the real CLIP zoos' findings this zoo reproduces."""
import streamlit as st

from tatr_core.analysis import run
from tatr_core.analysis.components import component_summary, components_spec
from tatr_core.analysis.conflict import conflict_spec
from tatr_core.analysis.evaluation import evaluation_spec
from tatr_core.analysis.geometry import geometry_spec
from tatr_core.analysis.orderings import stored_orderings
from tatr_core.figures import conflict_figure, per_task_components_figure
from tatr_core.figures.registry import draw, stem
from tatr_core.runs import evaluate_method
from tatr_core.trust_region import SENSITIVITIES
from tatr_core.ui.controls import TAU_CHOICES, control, orthogonal_fraction_control
from tatr_core.ui.downloads import show_figure
from tatr_core.ui.errors import friendly_errors
from tatr_core.ui import learn_text
from tatr_core.ui.jobs import analysis, progress_bar
from tatr_core.ui.session import current_zoo

st.title("Learn: merging in a trust region")
st.caption("Five steps, each with a live example computed on the zoo in use, then which of the real CLIP zoos' "
           "findings this zoo reproduces. Every number below is computed (and cached); the other pages go deeper.")

with friendly_errors():
    zoo, evaluator = current_zoo()
    zs = evaluate_method(zoo, "pretrained", evaluator=evaluator)
    ind = evaluate_method(zoo, "individual", evaluator=evaluator)

# -- 1 -----------------------------------------------------------------------------------------
st.header("1 · A task vector is what fine-tuning changed")
st.latex(r"\Delta_k = \theta_k - \theta_{pre}")
left, right = st.columns([2, 3])
with friendly_errors():
    geometry = run(zoo, geometry_spec(zoo))
with left:
    st.markdown(learn_text.step1(geometry))
    st.dataframe({"task": geometry["tasks"], "‖Δ_k‖": geometry["norms"]}, hide_index=True,
                 column_config={"‖Δ_k‖": st.column_config.NumberColumn(format="%.3f")})
with right:
    fig = draw("task-vector-cosines", [geometry], {})
    fig.update_layout(width=None, height=460)
    show_figure(fig, "learn-cosine", stem("task-vector-cosines", {}))

# -- 2 -----------------------------------------------------------------------------------------
st.header("2 · Task Arithmetic adds them")
st.latex(r"\theta_{MTL} = \theta_{pre} + \lambda \sum_{k=1}^{K} \Delta_k")
lam = st.slider("λ", 0.0, 1.0, step=0.05, key=control("learn-lam", 0.3, lambda v: 0 <= v <= 1),
                help="move it: λ = 0 is the pretrained model; large λ lets the task vectors fight. Steps 3 to 5 "
                     "follow it")
with friendly_errors(), progress_bar("merging and evaluating") as progress:
    ta = evaluate_method(zoo, "task_arithmetic", lam=lam, evaluator=evaluator, progress=progress)
st.metric("Task Arithmetic: average accuracy", f"{100 * ta['average_accuracy']:.1f}%",
          f"{100 * (ta['average_accuracy'] - zs['average_accuracy']):+.1f} vs zero-shot, "
          f"{100 * (ta['average_accuracy'] - ind['average_accuracy']):+.1f} vs the fine-tuned models")
st.markdown(learn_text.step2(ta, zs, ind, lam))
ta_params = {"method": "task_arithmetic", "lam": lam}
show_figure(draw("accuracy", [zs, ind, ta], ta_params), "learn-ta", stem("accuracy", ta_params))

# -- 3 -----------------------------------------------------------------------------------------
st.header("3 · Knowledge conflict: adding one task hurts another")
st.latex(r"\mathcal{C}_{j|i} = L_j\big(\theta_{MTL}(\{\theta_k\}_{k=1}^{K})\big) "
         r"- L_j\big(\theta_{MTL}(\{\theta_k\}_{k\neq i})\big)")
with friendly_errors():
    conflict = analysis(zoo, conflict_spec(zoo, "task_arithmetic", lam=lam), evaluator)
if conflict is not None:
    left, right = st.columns([2, 3])
    with left:
        st.markdown(learn_text.step3(conflict))
        st.page_link("app_pages/knowledge_conflicts.py", label="Compare methods on Knowledge Conflicts",
                     icon=":material/compare_arrows:")
    with right:
        fig = conflict_figure(conflict, "accuracy")
        fig.update_layout(width=None, height=480)
        show_figure(fig, "learn-conflict", stem("conflict", {"method": "task_arithmetic", "lam": lam, "form": "accuracy"}))

# -- 4 -----------------------------------------------------------------------------------------
st.header("4 · Which parts of a task vector conflict")
st.latex(r"L_j(\theta_{pre} + \lambda\Delta) \approx L_j(\theta_{pre}) + \lambda\,\nabla L_j(\theta_{pre})^{\top}\Delta")
st.markdown(
    "To first order, another task's vector changes task *j*'s loss by the product of *j*'s gradient and that "
    "vector. Split the others' summed vector by the sign of ∇L_j ⊙ Δ: Δ⁺ (raises *j*'s loss to first order), "
    "Δ⁻ (lowers it to first order) and Δ⊥ (the products nearest zero). Below, θ_pre plus each part is evaluated "
    "on task *j*.")
fraction = orthogonal_fraction_control("learn-orthogonal")
with friendly_errors():
    components = analysis(zoo, components_spec(zoo, lam=lam, orthogonal_fraction=fraction), evaluator)
if components is not None:
    st.markdown(learn_text.step4(component_summary(components)))
    left, right = st.columns(2)
    with left:
        show_figure(per_task_components_figure(components, "accuracy"), "learn-components",
                    stem("components-per-task", {"lam": lam, "orthogonal_fraction": fraction}))
    with right:
        show_figure(per_task_components_figure(components, "loss"), "learn-components-loss",
                    stem("components-per-task", {"lam": lam, "orthogonal_fraction": fraction, "metric": "loss"}))

# -- 5 -----------------------------------------------------------------------------------------
st.header("5 · TATR merges inside a trust region")
st.latex(r"\Omega = " + SENSITIVITIES["gradient"].formula + r", \qquad "
         r"\theta_{MTL} = \theta_{pre} + \lambda \sum_k \Delta_k \odot m, \quad m = \mathbb{1}[\Omega \text{ not in the top } \tau]")
st.markdown("Ω is large where some task vector is large **and** another task's loss is steep: the dimensions where "
            "a step is most likely to move another task's loss, in either direction. TATR leaves out the top τ "
            "of them and adds everything else.")
tau_pct = st.select_slider("τ (%)", TAU_CHOICES[1:], key=control("learn-tau", 1.0, TAU_CHOICES[1:]))
with friendly_errors():
    tatr = analysis(zoo, evaluation_spec(zoo, "tatr", lam=lam, tau=tau_pct / 100), evaluator,
                    label=f"TATR merge (τ = {tau_pct:g}%)")
if tatr is not None:
    c1, c2, c3 = st.columns(3)
    c1.metric(f"Task Arithmetic (λ = {lam:g})", f"{100 * ta['average_accuracy']:.1f}%")
    c2.metric(f"TATR (τ = {tau_pct:g}%)", f"{100 * tatr['average_accuracy']:.1f}%",
              f"{100 * (tatr['average_accuracy'] - ta['average_accuracy']):+.1f} points")
    c3.metric("dimensions left out", f"{tatr['excluded']:,}", f"of {zoo.task_vectors.N:,}", delta_color="off",
              delta_arrow="off")
    pair = {"lam": lam, "tau": tau_pct / 100}
    show_figure(draw("tatr-vs-task-arithmetic", [ta, tatr], pair), "learn-tatr", stem("tatr-vs-task-arithmetic", pair))
st.page_link("app_pages/trust_region.py", label="See where the trust region cuts", icon=":material/shield:")

# -- 6 -----------------------------------------------------------------------------------------
st.header("6 · What this zoo shows of the real CLIP zoos")
stored = stored_orderings(zoo.key)
if stored is None:
    st.caption("These checks need every method's row with λ chosen on validation (half an hour on the mini zoo): "
               "`python bench/mini_zoo_table.py --write` computes and stores them for a shipped zoo. None are stored "
               "for this one.")
else:
    st.markdown(learn_text.orderings(stored))
    st.dataframe({"finding on CLIP ViT-B/32": [c["what"] for c in stored["checks"]],
                  "on this zoo": ["holds" if c["holds"] else "does not hold" for c in stored["checks"]],
                  "numbers": [c["detail"] for c in stored["checks"]]}, hide_index=True)
