"""Sidebar widgets generated from declared parameters (:class:`tatr_core.merge.registry.Param`), kept and
mirrored in the URL like every shared control."""
from __future__ import annotations

from typing import Any

import streamlit as st

from .controls import EXEMPLAR_CHOICES, control


def parameter_widget(method: str, param) -> Any:
    """The sidebar widget of one declared parameter (:class:`tatr_core.merge.registry.Param`), kept and
    mirrored in the URL under ``<name>-<method>``; returns its value."""
    key, label, help_ = f"{param.name}-{method}", param.label or param.name, param.help
    if param.kind is str:
        return st.radio(label, list(param.choices), key=control(key, param.default, param.choices), help=help_,
                        horizontal=True)
    if param.grid:
        values = sorted(set(param.grid) | {param.default})
        return st.select_slider(label, values, key=control(key, param.default, values), help=help_)
    if param.kind is float:
        step = 0.05
        low = (param.low if param.low is not None else 0.0) + (step if param.low_open else 0.0)
        high = param.high if param.high is not None else max(1.5, 2 * float(param.default))
        return st.slider(label, float(low), float(high), step=step, help=help_,
                         key=control(key, float(param.default), lambda v: low <= v <= high))
    low = int(param.low) if param.low is not None else None
    high = int(param.high) if param.high is not None else None
    return int(st.number_input(label, min_value=low, max_value=high, step=1, help=help_,
                               key=control(key, int(param.default),
                                           lambda v: (low is None or v >= low) and (high is None or v <= high))))


def method_controls(method: str, spec, exemplars_needed: bool) -> dict:
    """Sidebar widgets generated from a method's declared parameters; returns them as keyword arguments.
    The exemplar count is one shared control (it also serves the gradients behind the trust region)."""
    kw = {p.name: parameter_widget(method, p) for p in spec.parameters if p.name not in ("exemplars", "seed")}
    if "exemplars" in spec.declared or exemplars_needed:
        default = spec.declared["exemplars"].default if "exemplars" in spec.declared else 128
        kw["exemplars"] = st.select_slider("exemplars per task", EXEMPLAR_CHOICES,
                                           key=control("exemplars", default, EXEMPLAR_CHOICES),
                                           help="training images per task behind the gradients, Fishers and Grams")
    return kw
