"""Merge Lab: pick a method and its parameters, see per-task accuracy against zero-shot and
fine-tuned, download the merged checkpoint and the recipe that reproduces it with the CLI."""
import json
import pathlib
import tempfile

import streamlit as st
import yaml

from tatr_core.checkpoints import save_safetensors
from tatr_core.analysis.evaluation import evaluation_spec
from tatr_core.figures import accuracy_bars_figure
from tatr_core.figures.registry import draw, stem
from tatr_core.merge import REGISTRY
from tatr_core.runs import eval_command, evaluate_method, merge_inputs, merge_tasks, method_params
from tatr_core.trust_region import SENSITIVITIES
from tatr_core.ui.controls import TAU_CHOICES, control
from tatr_core.ui.downloads import show_figure
from tatr_core.ui.errors import friendly_errors
from tatr_core.ui.jobs import analysis
from tatr_core.ui.session import current_zoo
from tatr_core.ui.widgets import method_controls

st.title("Merge Lab")

with friendly_errors():
    zoo, evaluator = current_zoo()

with st.sidebar:
    method = st.selectbox("Method", list(REGISTRY), key=control("method", "tatr", REGISTRY),
                          format_func=lambda m: f"{REGISTRY[m].label} ({m})")
    spec = REGISTRY[method]
    tau_pct = st.select_slider("τ: excluded from the trust region (%)", TAU_CHOICES,
                               key=control(f"tau-{method}", 100 * spec.default_tau, TAU_CHOICES))
    tau = tau_pct / 100
    sensitivity = None
    if tau > 0:
        sensitivity = st.selectbox("sensitivity Ω", list(SENSITIVITIES),
                                   key=control("sensitivity", "gradient", SENSITIVITIES))
    kw = method_controls(method, spec, tau > 0 and bool(SENSITIVITIES[sensitivity or "gradient"].needs))
    kw["tau"] = tau
    if sensitivity:
        kw["sensitivity"] = sensitivity
    if spec.uses_data:
        st.caption("This method learns from the tasks' images: the first run trains in the background (progress "
                   "and a time estimate on the page; it goes on if you visit other pages), later runs reuse the "
                   "cached result.")

with friendly_errors():
    zs = evaluate_method(zoo, "pretrained", evaluator=evaluator)
    ind = evaluate_method(zoo, "individual", evaluator=evaluator)
with friendly_errors():  # in the background: a fit takes minutes the first time, gradients half a minute
    record = analysis(zoo, evaluation_spec(zoo, method, **kw), evaluator,
                      label=f"{spec.label}: {'learning and evaluating' if spec.uses_data else 'merging and evaluating'}")
if record is None:  # what is ready already: the two references the merged model will join
    show_figure(accuracy_bars_figure({"zero-shot": zs, "fine-tuned": ind},
                                     f"{spec.label}: per-task accuracy (the merged model joins when it is ready)"),
                f"merge-lab-{method}-waiting")
    st.stop()

c1, c2, c3 = st.columns(3)
c1.metric("average accuracy", f"{100 * record['average_accuracy']:.1f}%",
          f"{100 * (record['average_accuracy'] - zs['average_accuracy']):+.1f} vs zero-shot")
c2.metric("fine-tuned average", f"{100 * ind['average_accuracy']:.1f}%")
c3.metric(f"excluded dimensions (of {zoo.task_vectors.N:,})", f"{record.get('excluded', 0):,}")

shown = {"method": method, **kw}
show_figure(draw("accuracy", [zs, ind, record], shown), f"merge-lab-{method}", stem("accuracy", shown))

if "learned" in record:  # AdaMerging: what it learned
    show_figure(draw("adamerging-coefficients", [record], shown), "ml-coefficients",
                stem("adamerging-coefficients", shown))
if "surgery" in record:
    show_figure(draw("surgery-gap", [record], shown), "ml-surgery", stem("surgery-gap", shown))

st.subheader("Take it with you")
recipe = {"zoo": zoo.info.get("manifest") or zoo.name, "method": method, "params": record["params"],
          "command": eval_command(zoo, method, record["params"])}


def merged_checkpoint(part: str = "encoder") -> bytes:
    params = method_params(method, **kw)
    result = merge_tasks(zoo, method, params, merge_inputs(zoo, params))
    if part == "encoder":
        tensors = zoo.task_vectors.to_state_dict(result.theta)
    else:  # Surgery's per-task modules, keyed <task>.down.weight / <task>.up.weight
        tensors = {f"{t}.{k}": v.detach().cpu() for t, m in result.extras["feature_maps"].items()
                   for k, v in m.state_dict().items()}
    with tempfile.TemporaryDirectory() as d:
        path = save_safetensors(tensors, pathlib.Path(d) / "merged.safetensors",
                                metadata={"tatr_recipe": json.dumps(recipe)})
        return path.read_bytes()


d1, d2, d3 = st.columns(3)
d1.download_button("merged image encoder (safetensors)", data=merged_checkpoint, file_name=f"{zoo.name}-{method}.safetensors",
                   mime="application/octet-stream", key="dl-merged")
if method == "surgery":
    d3.download_button("per-task surgery modules (safetensors)", data=lambda: merged_checkpoint("modules"),
                       file_name=f"{zoo.name}-surgery-modules.safetensors", mime="application/octet-stream",
                       key="dl-surgery")
d2.download_button("recipe (YAML)", data=yaml.safe_dump(recipe, sort_keys=False), file_name=f"{zoo.name}-{method}.yaml",
                   mime="text/yaml", key="dl-recipe")
st.code(recipe["command"], language="bash")
