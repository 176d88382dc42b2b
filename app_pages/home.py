"""Home: the zoo in use, its tasks with sample images, zero-shot vs fine-tuned accuracy, the map of pages."""
import pandas as pd
import streamlit as st

from tatr_core.merge import REGISTRY
from tatr_core.runs import evaluate_method
from tatr_core.trust_region import SENSITIVITIES
from tatr_core.ui.errors import friendly_errors
from tatr_core.ui.navigation import PAGES
from tatr_core.ui.session import current_zoo, warm_up

st.title("TATR Studio")
st.markdown(
    "Understand and do **multi-task model merging** of fine-tuned CLIP image encoders, built around "
    "**TATR — Task Arithmetic in Trust Region**: merge task vectors only in the dimensions where they "
    "do not conflict with other tasks' loss gradients."
)

sections: dict[str, list] = {}
for info in PAGES[1:]:
    sections.setdefault(info.section, []).append(info)
for col, (section, infos) in zip(st.columns(len(sections), border=True), sections.items()):
    col.markdown(f"**{section}**")
    for info in infos:
        col.page_link(info.path, label=info.title, icon=info.icon)
        col.caption(info.summary)

with friendly_errors():
    zoo, evaluator = current_zoo(warm=False)  # the gradients start once this page is drawn (its end)
    zs = evaluate_method(zoo, "pretrained", evaluator=evaluator)
    ind = evaluate_method(zoo, "individual", evaluator=evaluator)

st.subheader(f"Zoo `{zoo.name}`: {len(zoo.tasks)} tasks, {zoo.task_vectors.N:,} merged parameters ({zoo.arch})")
rows = []
for name, task in zoo.tasks.items():
    rows.append({"task": name, "classes": len(task.classnames), "test images": zs["tasks"][name]["n"],
                 "zero-shot %": round(100 * zs["tasks"][name]["accuracy"], 1),
                 "fine-tuned %": round(100 * ind["tasks"][name]["accuracy"], 1), "source": task.source})
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
st.caption(f"Average: zero-shot {100 * zs['average_accuracy']:.1f}%, fine-tuned (each model on its own task) "
           f"{100 * ind['average_accuracy']:.1f}%.")
st.markdown("**Sample test images**")
cols = st.columns(len(zoo.tasks))
for col, (name, task) in zip(cols, zoo.tasks.items()):
    images, labels = task.split("test")
    col.image([images[i].permute(1, 2, 0).numpy() for i in range(3)], width=64,
              caption=[task.classnames[int(labels[i])] for i in range(3)])
    col.caption(name)

st.subheader("Merge methods")
st.dataframe(pd.DataFrame([{"method": m.name, "as in the paper": m.label, "what it does": m.summary,
                            "default λ": "— (fixed)" if m.default_lam is None else f"{m.default_lam:g}",
                            "parameters": ", ".join(f"{k}={v}" for k, v in m.params.items()) or "—",
                            "default τ": f"{m.default_tau:g}"} for m in REGISTRY.values()]),
             hide_index=True, width="stretch")
st.subheader("Trust-region sensitivities Ω")
for s in SENSITIVITIES.values():
    left, right = st.columns([1, 2])
    left.markdown(f"**{s.name}** — {s.summary}")
    right.latex(r"\Omega = " + s.formula)

warm_up(zoo)  # on a first start, after this page's own evaluations instead of alongside them
