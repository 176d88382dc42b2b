"""The one registry of merge methods, and the typed parameters every method declares.

A method is one file in ``tatr_core/merge/`` that calls :func:`register` (modules are found by
discovery, :func:`tatr_core.merge.discover`).  It declares its parameters as :class:`Param`
values: name, type, default, range or choices, help, where the default comes from, and which
values the pages offer.  From those declarations come the command line's flags, the pages'
widgets, the validation of every value (:meth:`Param.check`) and the README's method table
(``scripts/method_table.py``).

* A task-vector method has ``combine(task_vectors, params) -> merged task vector (N,)`` (or a
  :class:`Combined`: the merged vector and, for a *task-aware* method such as EMR-Merging, each task's
  own vector); :func:`tatr_core.merge.merge` applies the plug-ins and the scaling:
  θ = θ_pre + λ · plug-ins(merged) (θ_pre + plug-ins(merged) for a method without λ).
* A data-using method (AdaMerging, Surgery, Fisher, RegMean) has ``fit(zoo, params,
  task_indices, inputs, progress) -> MergeResult`` instead: it learns or measures something on
  the zoo's images, then merges.

**Plug-ins** (:class:`Plugin`, :func:`register_plugin`) act on any method's merged task vector, in
registry order: the TATR trust region (``tau``, ``sensitivity``: the mask, Eqs. 10–13) and LiNeS
(``lines_beta``: layer-wise scaling).  They declare their parameters as methods do, and their table
rows.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..errors import TatrError
from ..keys import declare
from ..vectors import TaskVectors

Combine = Callable[[TaskVectors, dict], torch.Tensor]


def _owner(name: str) -> str:
    """How an error names whose parameter it is: 'tsv', or figure 'conflict' as given."""
    return name if " " in name else f"'{name}'"


@dataclass(frozen=True)
class Param:
    """One typed parameter: of a merge method, and of a figure (:mod:`tatr_core.figures.registry`)."""

    name: str  #: keyword, record key and CLI flag (``--name``)
    kind: type  #: float, int, str or bool
    default: Any  #: None: left out, the value is decided elsewhere (each method's own τ, say)
    help: str
    low: float | None = None  #: lower bound (inclusive unless ``low_open``)
    high: float | None = None  #: upper bound (inclusive unless ``high_open``)
    low_open: bool = False
    high_open: bool = False
    choices: tuple = ()  #: the allowed values of a str parameter
    grid: tuple = ()  #: the values the pages offer (select slider); empty: a number box or a slider
    label: str = ""  #: the widget's label (default: the name)
    source: str = ""  #: where the default comes from
    many: bool = False  #: a list of values (a flag that takes several: ``--values 0.1 0.3``)

    def with_default(self, default: Any, source: str = "", **changes: Any) -> "Param":
        """The same parameter with another default (and its source) for another method."""
        return dataclasses.replace(self, default=default, source=source or self.source, **changes)

    def must(self) -> str:
        """What a value must be, in words: "a number in (0, 1]", "one of task, layer", ..."""
        if self.many:
            return "a list of " + dataclasses.replace(self, many=False).must().removeprefix("a ").removeprefix("one ")
        if self.kind is bool:
            return "true or false"
        if self.kind is str:
            return "one of " + ", ".join(self.choices) if self.choices else "a name"
        what = "a whole number" if self.kind is int else "a number"

        def num(x) -> str:
            return f"{x}" if isinstance(x, int) else f"{x:g}"

        if self.low is not None and self.high is not None:
            return f"{what} in {'(' if self.low_open else '['}{num(self.low)}, {num(self.high)}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{what} {'>' if self.low_open else '≥'} {num(self.low)}"
        if self.high is not None:
            return f"{what} {'<' if self.high_open else '≤'} {num(self.high)}"
        return f"a finite {what[2:] if what.startswith('a ') else what}"

    def check(self, method: str, value: Any) -> Any:
        """``value`` converted to the parameter's type, or a :class:`TatrError` naming what it must be
        (``None`` passes for a parameter whose default is None: left out).  ``method``: whose parameter it
        is, as the message names it (a method's name, or "figure 'conflict'")."""
        if value is None and self.default is None:
            return None
        if self.many:
            if not isinstance(value, (list, tuple)) or not value:
                raise TatrError(f"{self.name} of {_owner(method)} must be {self.must()}, got {value!r}")
            one = dataclasses.replace(self, many=False)
            return [one.check(method, v) for v in value]
        shown = "λ" if self.name == "lam" else self.name
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "false", "0"):
                return str(value).lower() in ("true", "1")
            raise TatrError(f"{shown} of {_owner(method)} must be true or false, got {value!r}")
        if self.kind is str:
            value = str(value)
            if self.choices and value not in self.choices:
                raise TatrError(f"{shown} of {_owner(method)} must be {self.must()}, got '{value}'")
            return value
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise TatrError(f"{shown} of {_owner(method)} must be {self.must()}, got {value!r}") from None
        if not math.isfinite(number):
            raise TatrError(f"{shown} must be finite, got {value}")
        if self.kind is int:
            if not number.is_integer():
                raise TatrError(f"{shown} of {_owner(method)} must be a whole number, got {value!r}")
            number = int(number)
        too_low = self.low is not None and (number <= self.low if self.low_open else number < self.low)
        too_high = self.high is not None and (number >= self.high if self.high_open else number > self.high)
        if too_low or too_high:
            raise TatrError(f"{shown} of {_owner(method)} must be {self.must()}, got {value}")
        return number


@dataclass(frozen=True)
class MergeMethod:
    name: str  #: CLI / registry name
    label: str  #: name in the paper's tables
    summary: str  #: one line for help texts and pages
    combine: Combine | None
    parameters: tuple[Param, ...] = ()  #: every parameter, λ included when the method has one
    default_tau: float = 0.0  #: trust-region fraction used when none is given
    plugin: bool = True  #: the TATR trust-region mask applies to its merged task vector
    fit: Callable | None = None  #: data-using methods: fit(zoo, params, task_indices, inputs, progress)
    group: str = "Training-free methods"  #: the row group of the paper's Table 1
    order: float = 1000.0  #: position in lists, pages and tables
    reference: str = ""  #: the paper it comes from
    rows: tuple[tuple[str, dict], ...] = ()  #: its rows in the paper's Table 1: (label, parameters)
    module: str = field(default="", compare=False)  #: the file that declares it
    #: bumped when what the method computes changes (even in its last digits): cached results of an
    #: earlier revision are then never found again (folded into every key that names the method,
    #: :mod:`tatr_core.keys`)
    revision: int = 1
    #: one model per task (evaluated task-aware: each task with its own), e.g. EMR-Merging, TSV-C
    task_aware: bool = False
    #: defaults that depend on the value of its ``variant`` parameter: {variant: {parameter: default}}
    variant_defaults: dict = field(default_factory=dict, compare=False)

    @property
    def uses_data(self) -> bool:
        return self.fit is not None

    @property
    def declared(self) -> dict[str, Param]:
        return {p.name: p for p in self.parameters}

    @property
    def default_lam(self) -> float | None:
        """The default λ, or None when the method has no λ (its scaling is fixed, or learned)."""
        lam = self.declared.get("lam")
        return None if lam is None else lam.default

    @property
    def params(self) -> dict[str, Any]:
        """The method's own parameters (all but λ) and their defaults."""
        return {p.name: p.default for p in self.parameters if p.name != "lam"}


REGISTRY: dict[str, MergeMethod] = {}


def register(name: str, label: str, summary: str, *, params: tuple[Param, ...] = (), default_tau: float = 0.0,
             uses_data: bool = False, group: str | None = None, order: float = 1000.0, reference: str = "",
             plugin: bool = True, rows: tuple[tuple[str, dict], ...] | None = None, revision: int = 1,
             task_aware: bool = False, variant_defaults: dict | None = None) -> Callable:
    """Decorator: ``combine`` for a task-vector method, or ``fit`` when ``uses_data``.

    ``rows``: the method's rows in Table 1 (default: one row, its label, default parameters).
    ``revision``: bump it when a change alters what the method computes, so no cached result of the
    earlier code is shown again.
    """
    def deco(fn):
        if name in REGISTRY:
            raise ValueError(f"merge method '{name}' registered twice")
        names = [p.name for p in params]
        if len(set(names)) != len(names):
            raise ValueError(f"merge method '{name}' declares a parameter twice: {names}")
        REGISTRY[name] = MergeMethod(
            name, label, summary, None if uses_data else fn, tuple(params), default_tau, plugin,
            fit=fn if uses_data else None,
            group=group or ("Test-time training methods" if uses_data else "Training-free methods"),
            order=order, reference=reference, rows=tuple(rows) if rows is not None else ((label, {}),),
            module=fn.__module__, revision=revision, task_aware=task_aware, variant_defaults=variant_defaults or {})
        declare(f"method {name}", revision)
        return fn
    return deco


@dataclass
class Combined:
    """What a task-aware method's ``combine`` returns: the merged task vector (the one model, used for
    tasks outside the merge) and ``task_vector(k)``, task k's own vector (computed when asked, so K
    models are never held at once), with ``extras`` for the record (sizes, rescalers)."""
    merged: torch.Tensor
    task_vector: Callable[[int], torch.Tensor] | None = None
    extras: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Plugin:
    """A plug-in on any method's merged task vector (the TATR trust region, LiNeS)."""

    name: str
    label: str  #: as its table rows name it ("& TATR", "& LiNeS")
    summary: str
    parameters: tuple[Param, ...]
    #: (method, parameters given) -> the plug-in's resolved parameters ({} when it is off)
    resolve: Callable[["MergeMethod", dict], dict]
    #: (task vectors, merged vector, all parameters, state) -> the merged vector after the plug-in
    apply: Callable[..., torch.Tensor]
    #: whether it replaces the method's λ (LiNeS scales layer by layer instead)
    replaces_lam: bool = False
    reference: str = ""
    order: float = 0.0  #: plug-ins apply in this order (the trust-region mask first, then LiNeS' scaling)
    #: its rows in Table 1: (the method it plugs into, the row's parameters); "" for a row of its own
    rows: tuple[tuple[str, dict], ...] = ()


PLUGINS: dict[str, Plugin] = {}


def register_plugin(plugin: Plugin) -> Plugin:
    if plugin.name in PLUGINS:
        raise ValueError(f"plug-in '{plugin.name}' registered twice")
    PLUGINS[plugin.name] = plugin
    return plugin


def plugin_parameters() -> dict[str, Param]:
    """Every plug-in's parameters, by name."""
    return {p.name: p for plugin in PLUGINS.values() for p in plugin.parameters}


# ------------------------------------------------------------------------------ shared declarations
LAM = Param("lam", float, 0.3, "scaling λ of the merged task vector", label="λ (scaling)",
            source="Task Arithmetic's λ = 0.3 for 8 ViT-B/32 tasks (Ilharco et al., 2023; the TATR paper's protocol)")
DENSITY = Param("density", float, 0.2, "fraction of each task vector kept by TIES' trim (largest |Δ| first)",
                low=0.0, high=1.0, low_open=True, label="density (TIES trim)",
                source="TIES-Merging's top-20% (Yadav et al., 2023)")
EXEMPLARS = Param("exemplars", int, 128, "training images per task (gradients, Fishers, Grams)", low=1,
                  grid=(1, 2, 4, 8, 16, 32, 64, 128), label="exemplars per task",
                  source="the TATR paper's exemplar set of 128")
#: seeds are 32-bit (torch's generators and every loader's take them)
MAX_SEED = 2**32 - 1
SEED = Param("seed", int, 0, "seed of the method's random draws", low=0, high=MAX_SEED, label="seed")
LR = Param("lr", float, 1e-3, "Adam learning rate", low=0.0, low_open=True, grid=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
           label="learning rate (Adam)", source="AdaMerging's and Surgery's 1e-3 (Yang et al., 2024)")
STEPS = Param("steps", int, 500, "training steps", low=1, grid=(50, 100, 200, 500, 1000), label="training steps",
              source="AdaMerging's and Surgery's 500 steps (Yang et al., 2024)")
BATCH = Param("batch", int, 16, "unlabelled test images per task per step", low=1, grid=(4, 8, 16, 32, 64),
              label="unlabelled images per task per step", source="AdaMerging's batch of 16 (Yang et al., 2024)")


def markdown_table(methods) -> str:
    """The README's method table, generated from the declarations (``scripts/method_table.py`` prints it)."""
    def shown(p: Param) -> str:
        name = "λ" if p.name == "lam" else p.name
        default = p.default if p.kind is not float else f"{p.default:g}"
        return f"`{name}` {default} ({p.must().replace('a number ', '').replace('a whole number ', 'integer ')})"

    lines = ["| method | what it does | parameters: default (allowed) | TATR plug-in | source of the defaults | code |",
             "|---|---|---|---|---|---|"]
    for m in methods:
        params = "; ".join(shown(p) for p in m.parameters) or "—"
        sources = "; ".join(dict.fromkeys(p.source for p in m.parameters if p.source)) or "—"
        plugin = "yes" if m.plugin else "no"
        code = "tatr_core/" + m.module.split(".", 1)[1].replace(".", "/") + ".py"
        lines.append(f"| `{m.name}` | {m.summary} | {params} | {plugin} | {sources} | `{code}` |")
    return "\n".join(lines) + "\n"
