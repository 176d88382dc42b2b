"""Merge methods, their plug-ins, and the one entry point :func:`merge`.

>>> result = merge(task_vectors, "tatr", lam=0.3, tau=0.01, sensitivity="zero-shot")
>>> state_dict = task_vectors.to_state_dict(result.theta)

Every method in :data:`REGISTRY` produces a merged task vector; :func:`merge` applies the plug-ins
of :data:`PLUGINS` in order — the TATR trust region when τ > 0 (Eqs. 10–11: the mask multiplies the
merged task vector, so for TIES it acts after Trim / Elect / Merge), then LiNeS when ``lines_beta`` is
given (layer-wise scaling, in place of λ) — and returns θ = θ_pre + λ · plug-ins(merged).  τ = 0 skips
the mask entirely, so a method with τ = 0 is bit for bit the method without the plug-in.

A *task-aware* method (EMR-Merging, TSV-C) gives one model per task as well: ``result.task_theta(name)``
builds task ``name``'s own model when it is asked for (the evaluator asks task by task), with the same
plug-ins applied to its vector.
"""
from __future__ import annotations

import importlib
import pkgutil
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..checkpoints import all_finite
from ..errors import TatrError
from ..trust_region import TrustRegion, check_tau, sensitivity, trust_region
from ..vectors import TaskVectors
from .registry import PLUGINS, REGISTRY, Combined, MergeMethod, Param, Plugin, plugin_parameters, register

#: modules of this package that hold no method or plug-in
_NOT_METHODS = {"registry", "fitting"}


def discover() -> dict[str, MergeMethod]:
    """Import every method module of this package (one file per method family) and order the registry."""
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _NOT_METHODS:
            importlib.import_module(f"{__name__}.{info.name}")
    ordered = sorted(REGISTRY.values(), key=lambda m: (m.order, m.name))
    REGISTRY.clear()
    REGISTRY.update((m.name, m) for m in ordered)
    plugins = sorted(PLUGINS.values(), key=lambda p: (p.order, p.name))
    PLUGINS.clear()
    PLUGINS.update((p.name, p) for p in plugins)
    return REGISTRY


discover()

__all__ = ["REGISTRY", "PLUGINS", "MergeMethod", "MergeResult", "Param", "Plugin", "register", "merge",
           "resolve_params", "compute_trust_region", "check_merged_finite", "discover"]


@dataclass
class MergeResult:
    theta: torch.Tensor  #: merged flat parameters (N,)
    method: str
    params: dict  #: every parameter as used (defaults filled in)
    trust_region: TrustRegion | None  #: None when τ = 0
    seconds: float = 0.0
    extras: dict = field(default_factory=dict)
    #: a task-aware method's model of one task, by name (None: one model for every task)
    task_theta: Callable[[str], torch.Tensor] | None = None
    task_names: tuple[str, ...] = ()

    @property
    def excluded(self) -> int:
        return self.trust_region.excluded if self.trust_region else 0

    def theta_for(self, task: str) -> torch.Tensor:
        """The model that serves ``task``: its own for a task-aware method that merged it, else the one model."""
        if self.task_theta is not None and task in self.task_names:
            return self.task_theta(task)
        return self.theta


def get_method(name: str) -> MergeMethod:
    if name not in REGISTRY:
        raise TatrError(f"unknown merge method '{name}'; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def resolve_params(method: str, *, lam=None, tau=None, sensitivity: str | None = None, **given) -> dict:
    """Fill in defaults and check every parameter against the method's declarations (:class:`Param`)
    and the plug-ins'; raise :class:`TatrError` naming the parameter on a value that is wrong or does
    not apply.  ``given`` holds the method's own parameters (density, granularity, steps, p, ...) and
    the plug-ins' (``lines_beta``).  A method with a ``variant`` parameter takes the defaults of the
    variant chosen (:attr:`MergeMethod.variant_defaults`) for the parameters not given."""
    spec = get_method(method)
    declared = spec.declared
    given = {k: v for k, v in given.items() if v is not None}
    plugged = plugin_parameters()
    if lam is not None and "lam" not in declared:
        raise TatrError(f"λ does not apply to '{method}' (its scaling is fixed); leave --lam out")
    unknown = [k for k in given if k not in declared and k not in plugged]
    if unknown:
        name = unknown[0]
        own = ", ".join("λ" if k == "lam" else k for k in declared) or "none"
        users = [m.name for m in REGISTRY.values() if name in m.declared]
        raise TatrError(f"'{method}' has no parameter '{name}' (its own parameters: {own})"
                        + (f"; {name} applies to {', '.join(users)}" if users else ""))
    if lam is not None:
        given["lam"] = lam
    defaults = {p.name: p.default for p in spec.parameters}
    if "variant" in declared:
        variant = declared["variant"].check(method, given.get("variant", defaults["variant"]))
        defaults |= spec.variant_defaults.get(variant, {})
    params = {p.name: p.check(method, given.get(p.name, defaults[p.name])) for p in spec.parameters}
    for plugin in PLUGINS.values():
        params |= plugin.resolve(spec, {"tau": tau, "sensitivity": sensitivity, **given})
    if any(plugin.replaces_lam and any(p.name in params for p in plugin.parameters) for plugin in PLUGINS.values()):
        if lam is not None:
            raise TatrError("LiNeS scales the merged task vector layer by layer in place of λ: leave --lam out")
        params.pop("lam", None)
    return params


def check_merged_finite(theta: torch.Tensor, method: str, params: dict) -> torch.Tensor:
    """Refuse a merged model holding NaN/Inf: every input was checked finite, so they come from the
    arithmetic overflowing the dtype (λ = 1e40 in float32, say), and must never reach a file."""
    if not all_finite(theta):
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


def apply_plugins(tv: TaskVectors, merged: torch.Tensor, params: dict, state: dict) -> torch.Tensor:
    """``merged`` after every plug-in that is on for ``params``, in registry order."""
    for plugin in PLUGINS.values():
        if any(p.name in params for p in plugin.parameters):
            merged = plugin.apply(tv, merged, params, state)
    return merged


def merge(tv: TaskVectors, method: str, *, lam=None, tau=None, sensitivity: str | None = None,
          grads: torch.Tensor | None = None, signed_grads: torch.Tensor | None = None,
          region: TrustRegion | None = None, **own) -> MergeResult:
    """Merge the task vectors with a registered method and its plug-ins.

    ``own``: the method's own parameters (density, p, ...; see ``REGISTRY[method].parameters``) and the
    plug-ins' (``lines_beta``).  ``grads`` / ``signed_grads`` are ``(K, N)`` (E|∇L_k| and E∇L_k at θ_pre,
    aligned with ``tv``); ``region`` reuses a trust region already computed for these task vectors.
    """
    start = time.perf_counter()
    spec = get_method(method)
    if spec.uses_data:
        raise TatrError(f"'{method}' learns from the tasks' images, so it needs a zoo, not bare checkpoints: "
                        f"python -m tatr_core eval --zoo ZOO --method {method}")
    params = resolve_params(method, lam=lam, tau=tau, sensitivity=sensitivity, **own)
    if region is not None:  # a precomputed trust region decides τ and the variant
        params["tau"], params["sensitivity"] = region.tau, region.variant
    elif params["tau"] > 0:
        region = compute_trust_region(tv, params["tau"], params["sensitivity"], grads, signed_grads)
    combined = spec.combine(tv, params)
    if not isinstance(combined, Combined):
        combined = Combined(combined)
    state = {"region": region}
    merged = apply_plugins(tv, combined.merged, params, state)
    scale = params.get("lam", 1.0) if spec.default_lam is not None else 1.0
    theta = check_merged_finite(tv.pretrained + scale * merged, method, params)
    result = MergeResult(theta, method, params, region if params["tau"] > 0 else None, time.perf_counter() - start,
                         extras=dict(combined.extras))
    if combined.task_vector is not None:
        index = {name: k for k, name in enumerate(tv.names)}

        def task_theta(name: str) -> torch.Tensor:
            own_vector = apply_plugins(tv, combined.task_vector(index[name]), params, state)
            return check_merged_finite(tv.pretrained + scale * own_vector, method, params)

        result.task_theta, result.task_names = task_theta, tuple(tv.names)
    return result
