"""The TATR trust region as a plug-in on any method's merged task vector (Eqs. 10–13).

``tau`` (τ, the fraction of dimensions excluded; 0 = off) and ``sensitivity`` (Ω's variant, Table 6)
are its parameters.  :func:`tatr_core.merge.merge` computes the region (Ω from the task vectors and
the per-task gradients, the exact top-τ exclusion of Eq. 9) and this plug-in multiplies the merged
task vector by its mask.  The data-using methods apply the same region inside their fit (Eq. 12:
before AdaMerging learns its coefficients; Eq. 13: Surgery's base merge).
"""
from __future__ import annotations

import torch

from ..errors import TatrError
from ..trust_region import SENSITIVITIES, check_tau, sensitivity_spec
from ..vectors import TaskVectors
from .registry import MergeMethod, Param, Plugin, register_plugin

TAU = Param("tau", float, None, "fraction of dimensions excluded from the trust region (0 = off; default: the "
            "method's own, 1% for tatr)", low=0.0, high=1.0, high_open=True, label="τ: excluded (%)",
            source="the TATR paper's τ = 1% (searched in 0.1% … 5%)")
SENSITIVITY = Param("sensitivity", str, None, "sensitivity Ω of the trust region (default gradient)",
                    choices=tuple(SENSITIVITIES), source="the TATR paper's Eq. 8 (gradient)")


def resolve(spec: MergeMethod, given: dict) -> dict:
    tau = check_tau(spec.default_tau if given.get("tau") is None else given["tau"])
    if tau > 0 and not spec.plugin:
        raise TatrError(f"the TATR plug-in does not apply to '{spec.name}'; leave --tau out")
    out = {"tau": tau}
    if tau > 0 or given.get("sensitivity") is not None:
        variant = given.get("sensitivity") or "gradient"
        sensitivity_spec(variant)  # an unknown one is refused, naming the variants
        out["sensitivity"] = variant
    return out


def apply(tv: TaskVectors, merged: torch.Tensor, params: dict, state: dict) -> torch.Tensor:
    region = state.get("region")
    return merged * region.keep if region is not None and region.keep is not None else merged


register_plugin(Plugin("tatr", "TATR", "merge only inside the trust region: the top-τ dimensions of Ω are left out "
                       "(Eqs. 9–11)", (TAU, SENSITIVITY), resolve, apply, reference="the TATR paper", order=10))
