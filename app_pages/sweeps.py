"""Sweeps (Figure 3, Table 5): accuracy against τ, λ or the exemplar count, several methods overlaid.

Points appear as they finish, computed in the background (the sweep goes on if the user visits
other pages); each point is cached, so a sweep that was stopped resumes where it stopped."""
import streamlit as st

from tatr_core.analysis.sweeps import declared_sweeps, extended_grid, sweepable, sweeps_spec
from tatr_core.figures import sweep_figure
from tatr_core.figures.registry import stem
from tatr_core.merge import REGISTRY
from tatr_core.trust_region import SENSITIVITIES
from tatr_core.ui.controls import TAU_CHOICES, control
from tatr_core.ui.downloads import show_figure
from tatr_core.ui.errors import friendly_errors
from tatr_core.ui.jobs import analysis
from tatr_core.ui.session import current_zoo

st.title("Sweeps")
st.caption("Each point merges the zoo with the method at that value and evaluates every task on its test split "
           "(and, dashed, its validation split). Sweeps run in the background: the curves fill in as points finish, "
           "and a sweep goes on while you visit other pages.")

with friendly_errors():
    zoo, evaluator = current_zoo()

PARAMETERS = {"tau": "τ (trust-region exclusion)", "lam": "λ (scaling)", "exemplars": "exemplars per task"}
PARAMETERS |= declared_sweeps()  # every numeric parameter a training-free method declares: density, drop rate, ...
with st.sidebar:
    parameter = st.radio("sweep", list(PARAMETERS), key=control("sw-parameter", "tau", PARAMETERS),
                         format_func=PARAMETERS.get)
    choices = [m for m in REGISTRY if parameter in sweepable(m)]
    default = {"tau": ["tatr", "ties"], "lam": ["task_arithmetic", "tatr"], "exemplars": ["tatr", "ties"]}.get(
        parameter, choices[:2])
    methods = st.multiselect("methods", choices, key=control(f"sw-methods-{parameter}", default, choices),
                             format_func=lambda m: REGISTRY[m].label)
    fixed = {}
    if parameter == "exemplars":
        fixed["tau"] = st.select_slider("τ (%)", TAU_CHOICES[1:], key=control("sw-tau", 1.0, TAU_CHOICES[1:])) / 100
    if parameter in ("tau", "exemplars"):  # other sweeps run each method at its own default τ (TATR 1%, others 0)
        needs = [s for s in SENSITIVITIES if parameter != "exemplars" or SENSITIVITIES[s].needs]
        fixed["sensitivity"] = st.selectbox("sensitivity Ω", needs, key=control(f"sw-sensitivity-{parameter}",
                                                                                "gradient", needs))
    extend = st.checkbox("extend the grid past its last value", key=control(f"sw-extend-{parameter}", False),
                         help="adds two, four and eight times the last value (within the parameter's range): for "
                              "when the best point sits at the grid's edge")
    per_task = st.checkbox("show each task", key=control("sw-per-task", False))
    has_val = all("val" in task.splits for task in zoo.tasks.values())
    with_val = has_val and st.checkbox("validation curve beside the test curve", key=control("sw-val", True),
                                       help="The papers choose λ and τ on validation data: the dashed curve is the "
                                            "validation split, and the table below reports the test accuracy at "
                                            "the value that validation picks.")

if not methods:
    st.info("Pick at least one method in the sidebar.")
    st.stop()

splits = ["test", "val"] if with_val else ["test"]
grids = {m: extended_grid(m, parameter, zoo) if extend else sweepable(m)[parameter] for m in methods}


def live(record: dict) -> None:
    show_figure(sweep_figure(record["curves"], per_task), "sweep-live")


with friendly_errors():
    record = analysis(zoo, sweeps_spec(zoo, parameter, methods, grids, splits, **fixed), evaluator, show_partial=live)
if record is None:
    st.stop()
done = record["curves"]
show_figure(sweep_figure(done, per_task), "sweep-final", stem("sweep", {"parameter": parameter, "methods": methods}))

rows = []
scale = 100 if parameter == "tau" else 1
name = {"tau": "τ (%)", "lam": "λ", "exemplars": "exemplar count"}.get(parameter, PARAMETERS[parameter])
for method in methods:
    test = next(r for r in done if r["method"] == method and r["fixed"]["split"] == "test")
    best = max(test["points"], key=lambda p: p["average_accuracy"])  # the first of equal maxima
    row = {"method": REGISTRY[method].label, f"best {name} on test": best["value"] * scale,
           "best test %": round(100 * best["average_accuracy"], 2),
           "at the first point %": round(100 * test["points"][0]["average_accuracy"], 2)}
    if with_val:
        val = next(r for r in done if r["method"] == method and r["fixed"]["split"] == "val")
        pick = max(range(len(val["points"])), key=lambda i: val["points"][i]["average_accuracy"])
        row[f"{name} chosen on val"] = val["points"][pick]["value"] * scale
        row["test % at that value"] = round(100 * test["points"][pick]["average_accuracy"], 2)
    rows.append(row)
st.dataframe(rows, hide_index=True)
if parameter == "tau":
    st.caption("τ = 0 is the method without the trust-region plug-in.")
