"""The registry of figures, in the shape of the merge registry: one declaration per figure.

A :class:`Figure` declares the analysis it draws, its typed parameters (:class:`tatr_core.merge.registry.Param`),
how its parameters make the analysis's spec(s), its builder, its file name and the variants the
``report`` draws.  From these declarations come the ``figure`` command's choices and flags, the
``report``'s figures, the pages' download names, and the test that builds every figure.  A new
figure is one declaration plus its builder.

    fig = build_figure("conflict", zoo, {"method": "tatr", "form": "accuracy"})
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import plotly.graph_objects as go

from ..analysis import run
from ..analysis.components import (ORTHOGONAL_FRACTION, components_spec, landscape_spec, merged_components_spec)
from ..analysis.conflict import conflict_spec
from ..analysis.disentanglement import disentanglement_spec
from ..analysis.evaluation import evaluation_spec
from ..analysis.geometry import geometry_spec
from ..analysis.layers import layers_spec
from ..analysis.sweeps import sweepable, sweeps_spec
from ..analysis.tsv_view import tsv_spec
from ..errors import TatrError
from ..keys import Spec
from ..merge import REGISTRY, plugin_parameters
from ..merge.registry import EXEMPLARS, LAM, SEED, Param
from ..trust_region import SENSITIVITIES
from ..zoo import Progress, Zoo, no_progress
from . import builders as b


@dataclass(frozen=True)
class Figure:
    name: str  #: the ``figure`` command's choice and the stem of its files
    title: str  #: what the figure shows (help text, the report's headings)
    analysis: str  #: the kind of the analysis it draws (tatr_core.analysis.ANALYSES)
    params: tuple[Param, ...]  #: its parameters (flags of the ``figure`` command)
    specs: Callable[[Zoo, dict], list[Spec]]  #: (zoo, parameters) -> the specs of the records it draws
    draw: Callable[[list[dict], dict], go.Figure]  #: (records, parameters) -> the figure
    stem: Callable[[dict], str]  #: its file name (no suffix) for these parameters
    #: the report's variants: (heading, parameters); :data:`FIRST_TASK` in either stands for the zoo's first task
    report: tuple[tuple[str, dict], ...] = ()
    method_params: bool = False  #: also takes the merge methods' own parameters (--density, ...)
    #: what the report's ``--draft`` changes: a grid figure's coarsest grid (a quick look, minutes fewer)
    draft: dict = field(default_factory=dict)
    module: str = field(default="", compare=False)

    @property
    def declared(self) -> dict[str, Param]:
        return {p.name: p for p in self.params}


FIGURES: dict[str, Figure] = {}
FIRST_TASK = "{first task}"  #: in a report variant: the zoo's first task


def report_variants(zoo: Zoo) -> list[tuple[str, str, dict]]:
    """Every figure the report draws for ``zoo``: (figure, heading, parameters), in registry order."""
    first = zoo.task_names[0]
    return [(name, heading.replace(FIRST_TASK, first),
             {k: first if v == FIRST_TASK else v for k, v in params.items()})
            for name, figure in FIGURES.items() for heading, params in figure.report]


def register(figure: Figure) -> Figure:
    if figure.name in FIGURES:
        raise ValueError(f"figure '{figure.name}' registered twice")
    names = [p.name for p in figure.params]
    if len(set(names)) != len(names):
        raise ValueError(f"figure '{figure.name}' declares a parameter twice: {names}")
    FIGURES[figure.name] = figure
    return figure


def method_parameter_names() -> set[str]:
    """The merge methods' own parameters and the plug-ins' after TATR (LiNeS' β): those a figure with
    ``method_params`` passes on to its method."""
    return ({p.name for m in REGISTRY.values() for p in m.parameters} | set(plugin_parameters())) - \
        {"exemplars", "seed", "tau", "sensitivity"}


def complete(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """A figure's parameters: ``given`` checked against its declarations, the defaults filled in.  A
    parameter the figure does not take is refused, naming the ones it takes."""
    if name not in FIGURES:
        raise TatrError(f"unknown figure '{name}'; choose one of {', '.join(FIGURES)}")
    figure = FIGURES[name]
    own = figure.declared
    methods = method_parameter_names() if figure.method_params else set()
    out: dict[str, Any] = {}
    for key, value in given.items():
        if value is None:
            continue
        if key in own:
            out[key] = own[key].check(f"figure '{name}'", value)
        elif key in methods:
            out[key] = value  # checked by the method it belongs to (resolve_params)
        else:
            takes = ", ".join(f"--{p.replace('_', '-')}" for p in own) or "none"
            raise TatrError(f"figure '{name}' takes no --{key.replace('_', '-')} (its parameters: {takes})")
    for p in figure.params:
        out.setdefault(p.name, p.default)
    return out


def method_kwargs(figure: Figure, params: dict) -> dict:
    """What a figure passes on to its merge method: τ and the sensitivity when given, and the methods' own
    parameters (λ, density, ...) that it does not declare itself, when given."""
    out = {k: params[k] for k in ("tau", "sensitivity") if params.get(k) is not None}
    if figure.method_params:
        out |= {k: v for k, v in params.items()
                if k in method_parameter_names() and k not in figure.declared and v is not None}
    return out


def specs(name: str, zoo: Zoo, params: dict) -> list[Spec]:
    """The specs of the records figure ``name`` draws with ``params`` (completed)."""
    return FIGURES[name].specs(zoo, complete(name, params))


def stem(name: str, params: dict) -> str:
    """The file name (no suffix) of figure ``name`` drawn with ``params``: the pages' downloads and the report's files."""
    return FIGURES[name].stem(complete(name, params))


def draw(name: str, records: list[dict], params: dict) -> go.Figure:
    return FIGURES[name].draw(records, complete(name, params))


def build_figure(name: str, zoo: Zoo, params: dict | None = None, *, evaluator=None,
                 progress: Progress = no_progress) -> go.Figure:
    """Run the analyses behind figure ``name`` (cached ones are read) and draw it."""
    params = complete(name, params or {})
    figure = FIGURES[name]
    todo = figure.specs(zoo, params)
    records = []
    for n, spec in enumerate(todo):
        records.append(run(zoo, spec, evaluator=evaluator,
                           progress=lambda f, m, n=n: progress((n + f) / len(todo), m)))
    return figure.draw(records, params)


# ------------------------------------------------------------------------------ parameters
SPLIT = Param("split", str, "test", "the split evaluated", choices=("test", "val"))
SAMPLE = Param("sample", int, None, "images per task evaluated: a fixed seeded subsample (default: all)", low=1)
SAMPLE_LANDSCAPE = SAMPLE.with_default(200, "200 test images per task: a grid point is a whole evaluation",
                                       help="images per task evaluated at each grid point (a fixed seeded subsample)")
METHOD = Param("method", str, "task_arithmetic", "the merge method", choices=tuple(REGISTRY))
TAU = Param("tau", float, None, "TATR plug-in: fraction of dimensions excluded (0 = off; default: the method's)",
            low=0.0, high=1.0, high_open=True)
SENSITIVITY = Param("sensitivity", str, None, "sensitivity Ω of the trust region (default gradient)",
                    choices=tuple(SENSITIVITIES))
EXEMPLARS_OPTIONAL = EXEMPLARS.with_default(None, help="training images per task behind the gradients, Fishers and "
                                                       "Grams (default 128)")
FORM = Param("form", str, "loss", "conflict in loss (nats) or in accuracy (points)", choices=("loss", "accuracy"))
ORTHOGONAL = Param("orthogonal_fraction", float, ORTHOGONAL_FRACTION,
                   "the share of the non-zero task-vector entries with the smallest |g ⊙ Δ| that form Δ⊥ (the paper's "
                   "'≈ 0')", low=0.0, high=1.0, label="Δ⊥: share of the entries")
LAM_COMPONENTS = LAM.with_default(0.3, help="scaling λ of the merged components")
METRIC = Param("metric", str, "accuracy", "what the bars show", choices=("accuracy", "loss"))
PLANE = Param("task", str, None, "the task whose components span the plane (default: the total loss)")
SHOWN = Param("loss", str, None, "whose loss is drawn: a task, or total (default: the plane's task, else the total)")
STEP = Param("step", float, 0.1, "grid step over [-0.2, 1.2] (0.1: the paper's 15×15)", low=0.0, low_open=True)
LAYER_SENSITIVITY = SENSITIVITY.with_default("gradient")
LAYER_TAU = TAU.with_default(0.01, help="fraction of dimensions excluded (Eq. 9)", low_open=True)
EXEMPLARS_128 = EXEMPLARS
BY = Param("by", str, "tensor", "columns: every parameter tensor, or blocks (embeddings, each transformer block, head)",
           choices=("tensor", "block"))
VALUES = Param("values", float, None, "the values evaluated (default: the parameter's grid)", many=True)
PARAMETER = Param("parameter", str, None, "the parameter swept: tau, lam, exemplars, or one the method declares "
                  "(density, drop_rate, ...)")
PER_TASK = Param("per_task", bool, False, "one line per task too")
LAYER = Param("layer", str, None, "the 2-D tensor whose spectra are drawn (default: the first mlp.c_fc)")
LAYER_INTERFERENCE = Param("layer_interference", bool, False,
                           "the interference in --layer alone (default: its mean over the layers)")
RUN = (SPLIT, SAMPLE, SEED)


def _pct(value: float) -> str:
    return f"{100 * value:g}pct"


# ------------------------------------------------------------------------------ declarations
def _conflict_specs(zoo: Zoo, p: dict) -> list[Spec]:
    return [conflict_spec(zoo, p["method"], exemplars=p["exemplars"], seed=p["seed"], split=p["split"],
                          sample=p["sample"], **method_kwargs(FIGURES["conflict"], p))]


register(Figure(
    "conflict", "Knowledge conflict C_{j|i} (Eq. 3)", "conflict",
    (METHOD, TAU, SENSITIVITY, EXEMPLARS_OPTIONAL, FORM, *RUN), _conflict_specs,
    lambda records, p: b.conflict_figure(records[0], p["form"]),
    lambda p: f"conflict-{p['method']}-{p['form']}",
    report=(("Knowledge conflict C_{j|i}, Task Arithmetic (Eq. 3)", {"method": "task_arithmetic"}),
            ("Knowledge conflict C_{j|i}, TATR", {"method": "tatr"}),
            ("Knowledge conflict, accuracy form", {"method": "task_arithmetic", "form": "accuracy"})),
    method_params=True))


def _component_args(p: dict) -> dict:
    return {"lam": p["lam"], "exemplars": p["exemplars"], "seed": p["seed"],
            "orthogonal_fraction": p["orthogonal_fraction"], "split": p["split"], "sample": p["sample"]}


register(Figure(
    "components", "Merging one component: θ^pos, θ^neg, θ^orth (Figure 2a)", "merged-components",
    (LAM_COMPONENTS, EXEMPLARS_128, ORTHOGONAL, *RUN),
    lambda zoo, p: [merged_components_spec(zoo, **_component_args(p))],
    lambda records, p: b.merged_components_figure(records[0]),
    lambda p: f"components-merged-orth{_pct(p['orthogonal_fraction'])}",
    report=(("Merging one component: θ^pos, θ^neg, θ^orth (Figure 2a)", {}),)))

register(Figure(
    "components-per-task", "Components Δ⁺ / Δ⁻ / Δ⊥ of the other tasks' vector, per task", "components",
    (LAM_COMPONENTS, EXEMPLARS_128, ORTHOGONAL, METRIC, *RUN),
    lambda zoo, p: [components_spec(zoo, **_component_args(p))],
    lambda records, p: b.per_task_components_figure(records[0], p["metric"]),
    lambda p: f"components-per-task-{p['metric']}-orth{_pct(p['orthogonal_fraction'])}",
    report=(("Components Δ⁺ / Δ⁻ / Δ⊥ of the other tasks' vector, per task", {}),)))


def _landscape_specs(zoo: Zoo, p: dict) -> list[Spec]:
    if p["loss"] not in (None, "total"):
        zoo.check_tasks([p["loss"]])
    return [landscape_spec(zoo, p["task"], step=p["step"], exemplars=p["exemplars"], seed=p["seed"],
                           orthogonal_fraction=p["orthogonal_fraction"], split=p["split"], sample=p["sample"])]


def _landscape_loss(p: dict) -> str | None:
    """The loss a landscape figure draws: the one asked for, else the plane's task, else the total (None)."""
    shown = p["loss"] if p["loss"] is not None else p["task"]
    return None if shown in (None, "total") else shown


def _landscape_stem(p: dict) -> str:
    from ..analysis.components import grid_axis

    n = len(grid_axis(step=p["step"]))
    return (f"landscape-{p['task'] or 'total'}-{_landscape_loss(p) or 'total'}-{n}x{n}"
            f"-orth{_pct(p['orthogonal_fraction'])}")


register(Figure(
    "landscape", "Loss landscape on the Δ⊥ / Δ⁺ / Δ⁻ plane (Figure 2b/c, Appendix B)", "landscape",
    (PLANE, SHOWN, STEP, EXEMPLARS_128, ORTHOGONAL, SPLIT, SAMPLE_LANDSCAPE, SEED), _landscape_specs,
    lambda records, p: b.landscape_figure(records[0], _landscape_loss(p)), _landscape_stem,
    report=(("Total loss landscape (Figure 2c, Figure 6)", {}),
            (f"Loss landscape of {FIRST_TASK} (Figure 2b, Figure 5)", {"task": FIRST_TASK})),
    draft={"step": 0.2}))


PAIR = Param("tasks", str, None, "the two tasks whose vectors are scaled (default: the zoo's first two)", many=True)
ALPHA_STEP = Param("step", float, 1.0, "grid step over [-3, 3] for α₁ and α₂ (1: 7×7; 0.5: the paper's 13×13)",
                   low=0.0, low_open=True)


def _disentanglement_stem(p: dict) -> str:
    from ..analysis.components import grid_axis

    n = len(grid_axis(-3.0, 3.0, p["step"], what="disentanglement"))  # the spec's axis
    return f"disentanglement-{'-'.join(p['tasks'] or ['first-two'])}-{n}x{n}"


register(Figure(
    "disentanglement", "Weight disentanglement ξ(α₁, α₂) of two tasks (Ortiz-Jiménez et al., 2023)", "disentanglement",
    (PAIR, ALPHA_STEP, SPLIT, SAMPLE_LANDSCAPE, SEED),
    lambda zoo, p: [disentanglement_spec(zoo, p["tasks"], step=p["step"], split=p["split"], sample=p["sample"],
                                         seed=p["seed"])],
    lambda records, p: b.disentanglement_figure(records[0]), _disentanglement_stem,
    report=(("Weight disentanglement of the first two tasks", {}),), draft={"step": 1.5}))


def _layer_specs(zoo: Zoo, p: dict) -> list[Spec]:
    return [layers_spec(zoo, p["sensitivity"], p["tau"], p["exemplars"], p["seed"])]


LAYER_PARAMS = (LAYER_SENSITIVITY, LAYER_TAU, EXEMPLARS_128, SEED)
register(Figure(
    "layer-sensitivity", "Sensitivity of each task to the other task vectors, per layer (Figure 4)", "layers",
    (*LAYER_PARAMS, BY), _layer_specs, lambda records, p: b.layer_sensitivity_figure(records[0], p["by"]),
    lambda p: f"layer-sensitivity-{p['sensitivity']}-{p['by']}",
    report=(("Sensitivity per layer (Figure 4)", {}), ("Sensitivity per block (Figure 4)", {"by": "block"}))))
register(Figure(
    "excluded", "Where the trust region cuts: the fraction of each layer excluded at τ", "layers",
    (*LAYER_PARAMS, BY), _layer_specs, lambda records, p: b.excluded_figure(records[0], p["by"]),
    lambda p: f"excluded-{p['sensitivity']}-{_pct(p['tau'])}-{p['by']}",
    report=(("Where the trust region cuts (τ = 1%)", {"by": "block"}),)))
register(Figure(
    "omega-histogram", "Distribution of Ω over all dimensions, with the top-τ threshold (Eq. 9)", "layers",
    LAYER_PARAMS, _layer_specs, lambda records, p: b.omega_histogram_figure(records[0]),
    lambda p: f"omega-histogram-{p['sensitivity']}-{_pct(p['tau'])}",
    report=(("Distribution of Ω", {}),)))

#: the swept parameter and the default methods of each sweep figure
SWEEPS = {"tau-sweep": ("tau", ("tatr",)), "lambda-sweep": ("lam", ("task_arithmetic",)),
          "exemplar-sweep": ("exemplars", ("tatr",)), "sweep": (None, ())}
METHODS = Param("methods", str, None, "the merge methods whose curves are drawn, overlaid", choices=tuple(REGISTRY),
                many=True)


def _sweep_params(name: str, p: dict) -> tuple[str, list[str]]:
    parameter, methods = SWEEPS[name]
    parameter = parameter or p["parameter"]
    methods = list(p["methods"] or methods)
    if parameter is None:
        raise TatrError("figure sweep needs --parameter (tau, lam, exemplars, or one the method declares)")
    if not methods:
        raise TatrError("figure sweep needs --methods (the methods whose parameter is swept)")
    return parameter, methods


def _sweep_specs(name: str):
    def specs_of(zoo: Zoo, p: dict) -> list[Spec]:
        parameter, methods = _sweep_params(name, p)
        grids = {}
        for method in methods:
            grid = sweepable(method)
            if parameter not in grid:
                raise TatrError(f"'{method}' can sweep {', '.join(grid)}, not '{parameter}'")
            grids[method] = p["values"] or grid[parameter]
        fixed = {k: v for k, v in method_kwargs(FIGURES[name], p).items() if k != parameter}
        if p["exemplars"] is not None and parameter != "exemplars":
            fixed["exemplars"] = p["exemplars"]
        fixed |= {"sample": p["sample"], "seed": p["seed"]}
        return [sweeps_spec(zoo, parameter, methods, grids, [p["split"]], **fixed)]
    return specs_of


def sweep_stem(parameter: str, methods: list[str]) -> str:
    """The file name of a sweep figure: the swept parameter and the methods drawn."""
    return "-".join(["sweep", parameter, *methods])


for _name, (_parameter, _methods) in SWEEPS.items():
    _swept = {"tau": "τ (Figure 3b)", "lam": "λ", "exemplars": "the exemplar count (Figure 3a, Table 5)",
              None: "any parameter a method declares"}[_parameter]
    register(Figure(
        _name, f"Accuracy against {_swept}", "sweeps",
        (METHODS.with_default(None, help=f"the merge methods drawn, overlaid (default {', '.join(_methods)})"
                              if _methods else METHODS.help),
         *((PARAMETER,) if _parameter is None else ()), VALUES, PER_TASK, TAU, SENSITIVITY, EXEMPLARS_OPTIONAL, *RUN),
        _sweep_specs(_name), lambda records, p: b.sweep_figure(records[0]["curves"], p["per_task"]),
        lambda p, _name=_name: sweep_stem(*_sweep_params(_name, p)),
        report={"tau-sweep": (("Accuracy against τ (Figure 3b)", {"per_task": True}),),
                "lambda-sweep": (("Accuracy against λ", {}),),
                "exemplar-sweep": (("Accuracy against the exemplar count (Figure 3a, Table 5)", {}),),
                "sweep": ()}[_name],
        method_params=True))

def _figure3_specs(zoo: Zoo, p: dict) -> list[Spec]:
    """Figure 3's two sweeps: (a) the exemplar count, (b) τ, each over its whole grid."""
    both = {**p, "values": None, "tau": None, "exemplars": None}
    return _sweep_specs("exemplar-sweep")(zoo, both) + _sweep_specs("tau-sweep")(zoo, both)


register(Figure(
    "figure-3", "Figure 3: average accuracy against (a) the exemplar count and (b) τ, side by side", "sweeps",
    (METHODS.with_default(None, help="the merge methods drawn, overlaid in both panels (default tatr)"), PER_TASK,
     SENSITIVITY, *RUN),
    _figure3_specs,
    lambda records, p: b.panels_figure([b.sweep_figure(r["curves"], p["per_task"]) for r in records],
                                       ["(a) exemplars", "(b) τ"],
                                       "Average accuracy against the exemplar count (a) and τ (b)"),
    lambda p: "figure-3-" + "-".join(p["methods"] or ["tatr"]),
    report=(("Figure 3: exemplars and τ side by side", {}),),
    method_params=True))

register(Figure(
    "tsv-spectrum", "Task singular vectors: spectra and singular task interference", "tsv",
    (LAYER, LAYER_INTERFERENCE), lambda zoo, p: [tsv_spec(zoo)],
    lambda records, p: b.tsv_spectrum_figure(records[0], p["layer"], per_layer=p["layer_interference"]),
    lambda p: f"tsv-spectrum-{p['layer'] or 'default-layer'}" + ("-layer" if p["layer_interference"] else ""),
    report=(("Task singular vectors: spectra and interference", {}),)))


def _evaluation_specs(zoo: Zoo, p: dict) -> list[Spec]:
    return [evaluation_spec(zoo, "pretrained"), evaluation_spec(zoo, "individual"),
            evaluation_spec(zoo, p["method"], exemplars=p["exemplars"], seed=p["seed"], split=p["split"],
                            sample=p["sample"], **method_kwargs(FIGURES["accuracy"], p))]


def _accuracy_bars(records: list[dict], p: dict) -> go.Figure:
    zs, ind, merged = records
    label = REGISTRY[p["method"]].label
    return b.accuracy_bars_figure({"zero-shot": zs, "fine-tuned": ind, label: merged},
                                  f"{label}: per-task accuracy", b.params_text(merged["params"]))


register(Figure(
    "accuracy", "Per-task accuracy of a merged model against zero-shot and the fine-tuned models", "method",
    (METHOD.with_default("tatr"), TAU, SENSITIVITY, EXEMPLARS_OPTIONAL, *RUN), _evaluation_specs, _accuracy_bars,
    lambda p: f"accuracy-{p['method']}", report=(("Per-task accuracy of TATR", {}),), method_params=True))


def _pair_specs(zoo: Zoo, p: dict) -> list[Spec]:
    return [evaluation_spec(zoo, "task_arithmetic", lam=p["lam"]),
            evaluation_spec(zoo, "tatr", lam=p["lam"], tau=p["tau"], exemplars=p["exemplars"], seed=p["seed"])]


def _pair_bars(records: list[dict], p: dict) -> go.Figure:
    ta, tatr = records
    return b.accuracy_bars_figure({f"Task Arithmetic (λ = {p['lam']:g})": ta,
                                   f"TATR (λ = {p['lam']:g}, τ = {100 * p['tau']:g}%)": tatr},
                                  "Task Arithmetic and TATR, task by task")


register(Figure(
    "tatr-vs-task-arithmetic", "Task Arithmetic and TATR at the same λ, task by task", "method",
    (LAM_COMPONENTS, LAYER_TAU, EXEMPLARS_128, SEED), _pair_specs, _pair_bars,
    lambda p: f"task-arithmetic-vs-tatr-lam{p['lam']:g}-tau{_pct(p['tau'])}",
    report=(("Task Arithmetic and TATR, task by task", {}),)))

register(Figure(
    "task-vector-cosines", "Cosine similarity of the task vectors", "geometry", (),
    lambda zoo, p: [geometry_spec(zoo)], lambda records, p: b.cosine_figure(records[0]),
    lambda p: "task-vector-cosines", report=(("Cosine similarity of the task vectors", {}),)))


def _fit_specs(name: str):
    def specs_of(zoo: Zoo, p: dict) -> list[Spec]:
        return [evaluation_spec(zoo, p["method"], exemplars=p["exemplars"], seed=p["seed"],
                                **method_kwargs(FIGURES[name], p))]
    return specs_of


register(Figure(
    "adamerging-coefficients", "AdaMerging: the learned coefficients, per task (and layer)", "method",
    (METHOD.with_default("adamerging", choices=("adamerging", "adamerging++")), TAU, SENSITIVITY,
     EXEMPLARS_OPTIONAL, SEED), _fit_specs("adamerging-coefficients"),
    lambda records, p: b.coefficients_figure(records[0]["learned"]),
    lambda p: f"{p['method']}-coefficients-{p.get('granularity') or 'layer'}", method_params=True))

register(Figure(
    "surgery-gap", "Representation Surgery: distance to the individual models' representations", "method",
    (METHOD.with_default("surgery", choices=("surgery",)), TAU, SENSITIVITY, EXEMPLARS_OPTIONAL, SEED),
    _fit_specs("surgery-gap"), lambda records, p: b.surgery_gap_figure(records[0]["surgery"]),
    lambda p: "surgery-l1-gap", method_params=True))


def markdown_table() -> str:
    """docs/analyses.md's figure table, generated from the declarations (``scripts/method_table.py --figures``)."""
    from ..analysis import ANALYSES

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| figure | what it shows | analysis | parameters: default | in the report |", "|---|---|---|---|---|"]
    for f in FIGURES.values():
        params = "; ".join(f"`{p.name}` {'—' if p.default is None else p.default}" for p in f.params) or "—"
        if f.method_params:
            params += "; the method's own parameters"
        report = "; ".join(heading for heading, _ in f.report) or "—"
        lines.append(f"| `{f.name}` | {cell(f.title)} | `{f.analysis}` ({ANALYSES[f.analysis].title}) | {params} "
                     f"| {cell(report)} |")
    return "\n".join(lines) + "\n"
