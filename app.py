"""TATR Studio — home page.

Layout only: everything shown comes from ``tatr_core`` (the merge-method registry and the
trust-region sensitivities).  The analysis pages arrive in ``pages/``.
"""
import pandas as pd
import streamlit as st

import tatr_core
from tatr_core.merge import REGISTRY
from tatr_core.trust_region import SENSITIVITIES

st.set_page_config(page_title="TATR Studio", page_icon="🧭", layout="wide")

st.title("TATR Studio")
st.markdown(
    "Understand and do **multi-task model merging** of fine-tuned CLIP image encoders, built around "
    "**TATR — Task Arithmetic in Trust Region**: merge task vectors only in the dimensions where they "
    "do not conflict with other tasks' loss gradients."
)

st.subheader("Merge methods")
st.dataframe(
    pd.DataFrame(
        [
            {
                "method": m.name,
                "as in the paper": m.label,
                "what it does": m.summary,
                "default λ": "fixed" if m.default_lam is None else m.default_lam,
                "parameters": ", ".join(f"{k}={v}" for k, v in m.params.items()) or "—",
                "default τ": m.default_tau,
            }
            for m in REGISTRY.values()
        ]
    ),
    hide_index=True,
    width="stretch",
)

st.subheader("Trust-region sensitivities Ω")
st.caption("The top τ fraction of dimensions by Ω leaves the trust region (Eq. 9); every method above accepts τ.")
for spec in SENSITIVITIES.values():
    left, right = st.columns([1, 2])
    left.markdown(f"**{spec.name}** — {spec.summary}")
    right.latex(r"\Omega = " + spec.formula)

st.subheader("Command line")
st.code(
    "python -m tatr_core merge --pretrained PRE --finetuned FT1 FT2 ... --method tatr \\\n"
    "    --sensitivity zero-shot --tau 0.01 --lam 0.3 --out merged.safetensors",
    language="bash",
)
st.caption(f"tatr_core {tatr_core.__version__}")
