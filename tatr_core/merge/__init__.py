"""Merge methods and the one entry point :func:`merge`.

>>> result = merge(task_vectors, "tatr", lam=0.3, tau=0.01, sensitivity="zero-shot")
>>> state_dict = task_vectors.to_state_dict(result.theta)

Every method in :data:`REGISTRY` produces a merged task vector; :func:`merge` applies the
TATR trust-region plug-in when τ > 0 (Eqs. 10–11: the mask multiplies the merged task
vector, so for TIES it acts after Trim / Elect / Merge) and returns
θ = θ_pre + λ · (merged ⊙ m).  τ = 0 skips the mask entirely, so a method with τ = 0 is
bit for bit the method without the plug-in.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from ..errors import TatrError
from ..trust_region import SENSITIVITIES, TrustRegion, check_tau, sensitivity, trust_region
from ..vectors import TaskVectors
from . import adamerging, basic, fisher, regmean, surgery, ties, tsv  # noqa: F401  (register the methods)
from .registry import REGISTRY, MergeMethod, register

#: display order (pages, tables, help): task-vector methods, then the data-using ones
_ORDER = ["average", "task_arithmetic", "tatr", "ties", "tsv", "fisher", "regmean", "adamerging", "adamerging++",
          "surgery"]
_ordered = sorted(REGISTRY.items(), key=lambda kv: _ORDER.index(kv[0]) if kv[0] in _ORDER else len(_ORDER))
REGISTRY.clear()
REGISTRY.update(_ordered)

__all__ = ["REGISTRY", "MergeMethod", "MergeResult", "register", "merge", "resolve_params", "compute_trust_region",
           "check_merged_finite"]


@dataclass
class MergeResult:
    theta: torch.Tensor  #: merged flat parameters (N,)
    method: str
    params: dict  #: every parameter as used (defaults filled in)
    trust_region: TrustRegion | None  #: None when τ = 0
    seconds: float = 0.0
    extras: dict = field(default_factory=dict)

    @property
    def excluded(self) -> int:
        return self.trust_region.excluded if self.trust_region else 0


def get_method(name: str) -> MergeMethod:
    if name not in REGISTRY:
        raise TatrError(f"unknown merge method '{name}'; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def _finite(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TatrError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise TatrError(f"{name} must be finite, got {value}")
    return value


#: checks of the data-using methods' parameters: (test, what the value must be)
_CHECKS = {
    "init": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "lr": (lambda v: v > 0, "positive"),
    "steps": (lambda v: v >= 1, "at least 1"),
    "batch": (lambda v: v >= 1, "at least 1"),
    "rank": (lambda v: v >= 1, "at least 1"),
    "alpha": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "exemplars": (lambda v: v >= 1, "at least 1"),
}


def _extra_param(method: str, spec: MergeMethod, key: str, value) -> float | int | str:
    default = spec.params[key]
    if isinstance(default, str):
        value = str(value)
        if key in spec.choices and value not in spec.choices[key]:
            raise TatrError(f"{key} of '{method}' must be one of {', '.join(spec.choices[key])}, got '{value}'")
        return value
    if isinstance(default, int):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise TatrError(f"{key} must be a whole number, got {value!r}") from None
        if not number.is_integer():
            raise TatrError(f"{key} must be a whole number, got {value!r}")
        value = int(number)
    else:
        value = _finite(key, value)
    test, must = _CHECKS.get(key, (lambda v: True, ""))
    if not test(value):
        raise TatrError(f"{key} of '{method}' must be {must}, got {value}")
    return value


def resolve_params(method: str, *, lam=None, density=None, tau=None, sensitivity: str | None = None,
                   **extra) -> dict:
    """Fill in defaults and check every parameter; raise :class:`TatrError` on values that do not apply.

    ``extra`` holds the method-specific parameters (``spec.params``: granularity, steps, rank, ...).
    """
    spec = get_method(method)
    extra = {k: v for k, v in extra.items() if v is not None}
    unknown = [k for k in extra if k not in spec.params or k == "density"]
    if unknown:
        known = ", ".join(k for k in spec.params if k != "density") or "none"
        raise TatrError(f"'{method}' has no parameter '{unknown[0]}' (its own parameters: {known})")
    params: dict = {}
    if spec.default_lam is None:
        if lam is not None:
            raise TatrError(f"λ does not apply to '{method}' (its scaling is fixed); leave --lam out")
    else:
        params["lam"] = _finite("λ", spec.default_lam if lam is None else lam)
    if "density" in spec.params:
        params["density"] = ties.check_density(spec.params["density"] if density is None else density)
    elif density is not None:
        raise TatrError(f"density applies to TIES-based methods only, not to '{method}'; leave --density out")
    for key, default in spec.params.items():
        if key != "density":
            params[key] = _extra_param(method, spec, key, extra.get(key, default))
    params["tau"] = check_tau(spec.default_tau if tau is None else tau)
    if params["tau"] > 0 or sensitivity is not None:
        variant = sensitivity or "gradient"
        if variant not in SENSITIVITIES:
            raise TatrError(f"unknown sensitivity '{variant}'; choose one of {', '.join(SENSITIVITIES)}")
        params["sensitivity"] = variant
    return params


def check_merged_finite(theta: torch.Tensor, method: str, params: dict) -> torch.Tensor:
    """Refuse a merged model holding NaN/Inf: every input was checked finite, so they come from the
    arithmetic overflowing the dtype (λ = 1e40 in float32, say), and must never reach a file."""
    if not bool(torch.isfinite(theta).all()):
        shown = ", ".join(f"{k} = {v}" for k, v in params.items())
        raise TatrError(f"'{method}' ({shown}) gives a merged model with NaN/Inf values although every input is "
                        f"finite: the arithmetic overflows {str(theta.dtype).replace('torch.', '')}. "
                        "Use a smaller λ (--lam); nothing was written")
    return theta


def compute_trust_region(tv: TaskVectors, tau: float, variant: str = "gradient",
                         grads: torch.Tensor | None = None, signed_grads: torch.Tensor | None = None) -> TrustRegion:
    """Ω (Eq. 8 or a Table 6 variant) and the top-τ exclusion (Eq. 9) for these task vectors."""
    if check_tau(tau) == 0:
        return TrustRegion(None, 0, tv.N, 0.0, variant)
    omega = sensitivity(tv.deltas, variant, grads=grads, signed_grads=signed_grads)
    return trust_region(omega, tau, variant)


def merge(tv: TaskVectors, method: str, *, lam=None, density=None, tau=None, sensitivity: str | None = None,
          grads: torch.Tensor | None = None, signed_grads: torch.Tensor | None = None,
          region: TrustRegion | None = None) -> MergeResult:
    """Merge the task vectors with a registered method and the optional trust-region plug-in.

    ``grads`` / ``signed_grads`` are ``(K, N)`` (E|∇L_k| and E∇L_k at θ_pre, aligned with
    ``tv``); ``region`` reuses a trust region already computed for these task vectors.
    """
    start = time.perf_counter()
    spec = get_method(method)
    if spec.uses_data:
        raise TatrError(f"'{method}' learns from the tasks' images, so it needs a zoo, not bare checkpoints: "
                        f"python -m tatr_core eval --zoo ZOO --method {method}")
    params = resolve_params(method, lam=lam, density=density, tau=tau, sensitivity=sensitivity)
    if region is not None:  # a precomputed trust region decides τ and the variant
        params["tau"], params["sensitivity"] = region.tau, region.variant
    elif params["tau"] > 0:
        region = compute_trust_region(tv, params["tau"], params["sensitivity"], grads, signed_grads)
    merged = spec.combine(tv, params)
    if region is not None and region.keep is not None:
        merged = merged * region.keep
    scale = params.get("lam", 1.0)
    theta = tv.pretrained + scale * merged if spec.default_lam is not None else tv.pretrained + merged
    check_merged_finite(theta, method, params)
    return MergeResult(theta, method, params, region if params["tau"] > 0 else None, time.perf_counter() - start)
