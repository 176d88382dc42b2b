"""Sidebar widgets generated from declared parameters (:class:`tatr_core.merge.registry.Param`), kept and
mirrored in the URL like every shared control."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import streamlit as st

from ..errors import TatrError
from ..merge import PLUGINS
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


def applicable_plugins(spec) -> list:
    """The plug-ins after TATR (LiNeS) that apply to method ``spec``, with the value each parameter starts at
    when switched on (its value in the plug-in's table rows)."""
    out = []
    for plugin in PLUGINS.values():
        if plugin.name == "tatr":  # τ and the sensitivity have their own controls
            continue
        start = {p.name: next((kw[p.name] for _, kw in plugin.rows if p.name in kw), p.grid[0] if p.grid else 0.0)
                 for p in plugin.parameters}
        try:
            plugin.resolve(spec, start)
        except TatrError:  # not for this method
            continue
        out.append((plugin, start))
    return out


def method_controls(method: str, spec, exemplars_needed: bool) -> dict:
    """Sidebar widgets generated from a method's declared parameters and the plug-ins that apply to it;
    returns them as keyword arguments.  A plug-in that replaces λ (LiNeS) hides the λ control while it is
    on.  The exemplar count is one shared control (it also serves the gradients behind the trust region)."""
    own = st.container()
    kw: dict = {}
    replaced: set[str] = set()
    for plugin, start in applicable_plugins(spec):
        on = st.toggle(plugin.label, key=control(f"{plugin.name}-{method}", False),
                       help=f"{plugin.summary[0].upper()}{plugin.summary[1:]}.")
        if on:
            for p in plugin.parameters:
                kw[p.name] = parameter_widget(method, replace(p, default=start[p.name]))
            if plugin.replaces_lam:
                replaced.add("lam")
    with own:
        kw = {p.name: parameter_widget(method, p) for p in spec.parameters
              if p.name not in ("exemplars", "seed") and p.name not in replaced} | kw
    if "exemplars" in spec.declared or exemplars_needed:
        default = spec.declared["exemplars"].default if "exemplars" in spec.declared else 128
        kw["exemplars"] = st.select_slider("exemplars per task", EXEMPLAR_CHOICES,
                                           key=control("exemplars", default, EXEMPLAR_CHOICES),
                                           help="training images per task behind the gradients, Fishers and Grams")
    return kw
