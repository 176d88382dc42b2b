"""Task-vector components and the loss landscape on their plane (Section 4, Figure 2, Appendix B).

Figure 2(a) as the paper draws it (:func:`merged_component_accuracy`): merged models built from one
component of the task vectors, θ^c_TATR = θ_pre + λ Σ_k Δ_k ⊙ 1_c, evaluated on every task.  The
dimensions are split by the cross-task product s = Σ_{i≠j} g_j ⊙ Δ_i (the signed sensitivity of
Table 6): Δ⊥ the ``orthogonal_fraction`` of the non-zero entries of Σ_k Δ_k with the smallest |s|,
Δ⁺ the rest with s > 0, Δ⁻ the rest with s < 0.  With ``orthogonal_fraction`` 0, θ^pos and θ^neg are
Table 6's TATR positive and TATR negative merges.

The per-task view (:func:`component_accuracy`, "components per task"): for a task j, the other
tasks' summed task vector Δ = Σ_{i≠j} Δ_i is split by the sign of g_j ⊙ Δ, with g_j = E∇L_j at
θ_pre (signed mean gradient over exemplars), and θ_pre + λ·component is evaluated on task j alone:

* Δ⊥ — the entries with the smallest |g_j ⊙ Δ|: a fraction ``orthogonal_fraction`` of the
  entries where Δ ≠ 0 (the paper's "≈ 0", made a parameter);
* Δ⁺ — the other entries with g_j ⊙ Δ > 0 (along the gradient: the loss goes up to first order);
* Δ⁻ — the other entries with g_j ⊙ Δ < 0.

The three have disjoint supports and sum to Δ.  For the total loss (``task=None``) Δ is the
sum of all task vectors and g the gradient of the total loss, Σ_j g_j.

The landscape is drawn on the plane through θ_pre+Δ⊥ (origin), θ_pre+Δ⁺ (1, 0) and θ_pre+Δ⁻
(0, 1): point (a, b) is θ_pre + Δ⊥ + a(Δ⁺ − Δ⊥) + b(Δ⁻ − Δ⊥).  θ_pre itself is marked at
its least-squares projection onto the plane.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..cache import digest
from ..errors import TatrError
from ..executors import run_points
from ..gradients import compute_task_gradients
from ..keys import Spec
from ..points import Shared, linear_point
from ..trust_region import count_for_fraction, sensitivity, top_k_mask
from ..zoo import Progress, Zoo, no_progress
from .registry import Context, has_keys, register, run

COMPONENTS = ("positive", "negative", "orthogonal")
#: The paper's "≈ 0" made a number: the share of the non-zero entries that form Δ⊥.
ORTHOGONAL_FRACTION = 0.9


def check_orthogonal_fraction(fraction: float) -> float:
    try:
        fraction = float(fraction)
    except (TypeError, ValueError):
        raise TatrError(f"the orthogonal fraction must be a number in [0, 1], got {fraction!r}") from None
    if not 0.0 <= fraction <= 1.0:
        raise TatrError(f"the orthogonal fraction must be in [0, 1] (the share of the non-zero entries with the "
                        f"smallest |g ⊙ Δ| that form Δ⊥; default {ORTHOGONAL_FRACTION}), got {fraction}")
    return fraction


def split_components(delta: torch.Tensor, grad: torch.Tensor, orthogonal_fraction: float) -> dict[str, torch.Tensor]:
    """``{"positive", "negative", "orthogonal"}`` parts of ``delta`` by the sign of ``grad ⊙ delta``
    (disjoint supports, sum = delta)."""
    return split_by_product(delta, grad * delta, orthogonal_fraction)


def split_by_product(delta: torch.Tensor, product: torch.Tensor, orthogonal_fraction: float) -> dict[str, torch.Tensor]:
    """The parts of ``delta`` where ``product`` is positive, negative, or among the
    ``orthogonal_fraction`` smallest in magnitude over the entries where delta ≠ 0."""
    orthogonal_fraction = check_orthogonal_fraction(orthogonal_fraction)
    nonzero = delta != 0
    k = count_for_fraction(orthogonal_fraction, int(nonzero.sum()))
    # smallest |g ⊙ Δ| among the non-zero entries (zeros of Δ contribute nothing either way)
    score = torch.where(nonzero, -product.abs(), torch.tensor(float("-inf"), dtype=product.dtype, device=product.device))
    orth = top_k_mask(score, k) & nonzero
    zero = torch.zeros((), dtype=delta.dtype, device=delta.device)
    return {
        "positive": torch.where(~orth & (product > 0), delta, zero),
        "negative": torch.where(~orth & (product < 0), delta, zero),
        "orthogonal": torch.where(orth | (nonzero & (product == 0)), delta, zero),
    }


def _target(zoo: Zoo, task: str | None, grads) -> tuple[torch.Tensor, torch.Tensor]:
    tv = zoo.task_vectors
    if task is None:
        return tv.deltas.sum(0), grads.mean.sum(0).to(tv.deltas.device)
    zoo.check_tasks([task])
    j = zoo.task_names.index(task)
    others = [k for k in range(tv.K) if k != j]
    if not others:
        raise TatrError("components of the other tasks need at least two tasks")
    return tv.deltas[others].sum(0), grads.mean[j].to(tv.deltas.device)  # no copy when both are there


def merged_components(zoo: Zoo, exemplars: int = 128, seed: int = 0, orthogonal_fraction: float = ORTHOGONAL_FRACTION,
                      progress: Progress = no_progress) -> dict[str, torch.Tensor]:
    """Figure 2(a)'s split of the summed task vectors Σ_k Δ_k by s = Σ_{i≠j} g_j ⊙ Δ_i, flat (N,)."""
    grads = compute_task_gradients(zoo, exemplars, seed, progress=progress)
    deltas = zoo.task_vectors.deltas
    cross = sensitivity(deltas, "positive", signed_grads=grads.mean)
    return split_by_product(deltas.sum(0), cross, orthogonal_fraction)


def _split_spec(kind: str, zoo: Zoo, lam: float, exemplars: int, seed: int, orthogonal_fraction: float, split: str,
                sample: int | None) -> Spec:
    params = {"lam": lam, "exemplars": exemplars, "seed": seed,
              "orthogonal_fraction": check_orthogonal_fraction(orthogonal_fraction)}
    return Spec.of(kind, zoo.key, {"params": params, "split": split, "sample": sample})


def merged_components_spec(zoo: Zoo, lam: float = 0.3, exemplars: int = 128, seed: int = 0,
                           orthogonal_fraction: float = ORTHOGONAL_FRACTION, split: str = "test",
                           sample: int | None = None) -> Spec:
    """The spec of :func:`merged_component_accuracy`."""
    return _split_spec("merged-components", zoo, lam, exemplars, seed, orthogonal_fraction, split, sample)


def merged_component_accuracy(zoo: Zoo, *, evaluator=None, progress: Progress = no_progress, use_cache: bool = True,
                              **kw) -> dict:
    """Figure 2(a): every task's accuracy and loss under θ_pre, Task Arithmetic (θ_pre + λ Σ_k Δ_k) and
    the merged models θ^pos / θ^neg / θ^orth_TATR = θ_pre + λ Σ_k Δ_k ⊙ 1_c, with each component's
    share of the entries and of the squared norm.  ``kw``: :func:`merged_components_spec`'s parameters."""
    return run(zoo, merged_components_spec(zoo, **kw), evaluator=evaluator, progress=progress, use_cache=use_cache)


@register("merged-components", "Figure 2(a): merged models of one component", has_keys("tasks", "models", "params"),
          lambda args: "Figure 2(a): five merged models")
def _merged_components(zoo: Zoo, args: dict, ctx: Context) -> dict:
    params, split, sample = args["params"], args["split"], args["sample"]
    lam, exemplars, seed, orthogonal_fraction = (params[k] for k in ("lam", "exemplars", "seed", "orthogonal_fraction"))
    evaluator, progress = ctx.evaluator, ctx.progress
    names = zoo.task_names
    base = f"merged-{digest(params)}"  # the shared vectors' names say what they are computed from
    memo: dict = {}

    def parts() -> dict:
        if not memo:
            memo.update(merged_components(zoo, exemplars, seed, orthogonal_fraction))
        return memo

    shared = Shared({f"{base}/{c}": (lambda c=c: parts()[c]) for c in COMPONENTS})
    models = {"pretrained": [], "all": [(f"{base}/{c}", lam) for c in COMPONENTS],
              **{c: [(f"{base}/{c}", lam)] for c in COMPONENTS}}
    points = [linear_point(zoo, f"Figure 2(a): {name}", terms, names, split, sample, seed, {"merged": params})
              for name, terms in models.items()]
    outcome = run_points(zoo, points, shared=shared, evaluator=evaluator, progress=progress, what="Figure 2(a) models")
    split_parts = parts()
    norm2 = float(sum(split_parts.values()).pow(2).sum()) or 1.0
    out: dict = {"tasks": names, "params": params, "split": split, "sample": sample, "models": {}}
    for name, results in zip(models, outcome.results):
        if results is None:
            continue
        row = {"tasks": results,
               "average_accuracy": sum(r["accuracy"] for r in results.values()) / len(results),
               "average_loss": sum(r["loss"] for r in results.values()) / len(results)}
        if name in split_parts:
            row["entries"] = int((split_parts[name] != 0).sum())
            row["norm_share"] = float(split_parts[name].pow(2).sum()) / norm2
        out["models"][name] = row
    outcome.mark_failures(out)
    progress(1.0, "Figure 2(a) done")
    return out


def task_components(zoo: Zoo, task: str | None, exemplars: int = 128, seed: int = 0,
                    orthogonal_fraction: float = ORTHOGONAL_FRACTION, progress: Progress = no_progress
                    ) -> dict[str, torch.Tensor]:
    """The three components for ``task`` (or the total loss when ``task`` is None), flat (N,)."""
    grads = compute_task_gradients(zoo, exemplars, seed, progress=progress)
    delta, g = _target(zoo, task, grads)
    return split_components(delta, g, orthogonal_fraction)


def components_spec(zoo: Zoo, lam: float = 0.3, exemplars: int = 128, seed: int = 0,
                    orthogonal_fraction: float = ORTHOGONAL_FRACTION, split: str = "test",
                    sample: int | None = None) -> Spec:
    """The spec of :func:`component_accuracy`."""
    return _split_spec("components", zoo, lam, exemplars, seed, orthogonal_fraction, split, sample)


def component_accuracy(zoo: Zoo, *, evaluator=None, progress: Progress = no_progress, use_cache: bool = True,
                       **kw) -> dict:
    """Components per task (the per-task view beside Figure 2(a)): per task j, accuracy and loss of
    θ_pre + λ·C for each component C of the others' Δ, on task j.

    Also the zero-shot baseline, θ_pre + λ·Δ (all of the others' vector), and each component's
    share of the entries and of the squared norm.  ``kw``: :func:`components_spec`'s parameters.
    """
    return run(zoo, components_spec(zoo, **kw), evaluator=evaluator, progress=progress, use_cache=use_cache)


@register("components", "components of the other tasks' vector, per task", has_keys("tasks", "per_task", "params"),
          lambda args: "splitting the task vectors by each task's gradient")
def _components(zoo: Zoo, args: dict, ctx: Context) -> dict:
    params, split, sample = args["params"], args["split"], args["sample"]
    lam, exemplars, seed, orthogonal_fraction = (params[k] for k in ("lam", "exemplars", "seed", "orthogonal_fraction"))
    evaluator, progress = ctx.evaluator, ctx.progress
    names = zoo.task_names
    base = f"per-task-{digest(params)}"
    memo: dict = {}

    def parts(task: str) -> dict:
        if task not in memo:
            memo[task] = task_components(zoo, task, exemplars, seed, orthogonal_fraction)
        return memo[task]

    shared = Shared({f"{base}/{t}/{c}": (lambda t=t, c=c: parts(t)[c]) for t in names for c in COMPONENTS})
    points, where = [], []
    for task in names:
        own = {c: f"{base}/{task}/{c}" for c in COMPONENTS}
        models = {"pretrained": [], "all": [(own[c], lam) for c in COMPONENTS], **{c: [(own[c], lam)] for c in COMPONENTS}}
        for name, terms in models.items():
            source = {"per_task": params, "task": task} if terms else {}
            points.append(linear_point(zoo, f"components for {task}: {name}", terms, [task], split, sample, seed, source))
            where.append((task, name))
    outcome = run_points(zoo, points, shared=shared, evaluator=evaluator, progress=progress, what="component models")
    out: dict = {"tasks": names, "params": params, "split": split, "sample": sample, "per_task": {t: {} for t in names}}
    for (task, name), result in zip(where, outcome.results):
        if result is not None:
            out["per_task"][task][name] = dict(result[task])
    for task in names:
        total = sum(parts(task).values())
        norm2 = float(total.pow(2).sum()) or 1.0
        for name, part in parts(task).items():
            if name in out["per_task"][task]:
                out["per_task"][task][name]["entries"] = int((part != 0).sum())
                out["per_task"][task][name]["norm_share"] = float(part.pow(2).sum()) / norm2
    outcome.mark_failures(out)
    progress(1.0, "components done")
    return out


def component_summary(record: dict) -> dict:
    """What a per-task components record shows, for text that states only that: per component, the
    tasks whose loss it raised above θ_pre's, its mean change of loss (nats) and of accuracy (points),
    and the task where Δ⁻ raised the loss most (the overshoot the paper describes)."""
    tasks = record["tasks"]
    out: dict = {"tasks": tasks}
    for name in COMPONENTS + ("all",):
        d_loss = {t: record["per_task"][t][name]["loss"] - record["per_task"][t]["pretrained"]["loss"] for t in tasks}
        d_acc = {t: 100 * (record["per_task"][t][name]["accuracy"] - record["per_task"][t]["pretrained"]["accuracy"])
                 for t in tasks}
        out[name] = {"raised_loss": [t for t in tasks if d_loss[t] > 0], "mean_loss_change": sum(d_loss.values()) / len(tasks),
                     "mean_accuracy_change": sum(d_acc.values()) / len(tasks),
                     "mean_abs_loss_change": sum(abs(v) for v in d_loss.values()) / len(tasks)}
    worst = max(tasks, key=lambda t: record["per_task"][t]["negative"]["loss"] - record["per_task"][t]["pretrained"]["loss"])
    out["negative_worst"] = {"task": worst, "before": record["per_task"][worst]["pretrained"]["loss"],
                             "after": record["per_task"][worst]["negative"]["loss"]}
    return out


#: the most points per axis of a landscape (61 × 61 = 3,721 merged models: hours on a laptop)
MAX_GRID = 61


def grid_axis(start: float = -0.2, stop: float = 1.2, step: float = 0.1, what: str = "landscape") -> list[float]:
    """Coordinates start, start+step, ..., stop (exact decimals, both ends included), at most
    :data:`MAX_GRID` of them (checked before anything is allocated); ``what`` names the grid in errors."""
    if not all(math.isfinite(x) for x in (start, stop, step)) or step <= 0 or stop < start:
        raise TatrError(f"{what} grid needs finite start ≤ stop and step > 0, got {start}, {stop}, {step}")
    points = round((stop - start) / step) + 1
    if points > MAX_GRID:
        smallest = math.ceil((stop - start) / (MAX_GRID - 1) * 1e4) / 1e4
        raise TatrError(f"a {what} grid with step {step:g} over [{start:g}, {stop:g}] has {points:,} × {points:,} "
                        f"points; the limit is {MAX_GRID} × {MAX_GRID} (--step at least {smallest:g}): use a larger --step")
    n = int(round((stop - start) / step)) + 1
    return [round(start + i * step, 10) for i in range(n)]


def plane_projection(theta_pre_offset: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> tuple[float, float]:
    """(a, b) minimising ‖r − a·u − b·v‖ for r = θ_pre − origin (2×2 normal equations in float64)."""
    u, v, r = u.double(), v.double(), theta_pre_offset.double()
    uu, uv, vv, ur, vr = (float(x) for x in (u @ u, u @ v, v @ v, u @ r, v @ r))  # on any device
    gram = torch.tensor([[uu, uv], [uv, vv]], dtype=torch.float64, device="cpu")
    rhs = torch.tensor([ur, vr], dtype=torch.float64, device="cpu")
    a, b = torch.linalg.lstsq(gram, rhs.unsqueeze(1)).solution.squeeze(1).tolist()
    return a, b


def landscape_spec(zoo: Zoo, task: str | None = None, *, start: float = -0.2, stop: float = 1.2, step: float = 0.1,
                   exemplars: int = 128, seed: int = 0, orthogonal_fraction: float = ORTHOGONAL_FRACTION,
                   split: str = "test", sample: int | None = 200) -> Spec:
    """The spec of :func:`loss_landscape`."""
    if task is not None:
        zoo.check_tasks([task])
    axis = grid_axis(start, stop, step)
    params = {"task": task, "axis": axis, "exemplars": exemplars, "seed": seed,
              "orthogonal_fraction": check_orthogonal_fraction(orthogonal_fraction)}
    return Spec.of("landscape", zoo.key, {"params": params, "split": split, "sample": sample})


def loss_landscape(zoo: Zoo, task: str | None = None, *, evaluator=None, progress: Progress = no_progress,
                   on_update: Callable[[dict], None] | None = None, use_cache: bool = True, **kw) -> dict:
    """Loss of every task (and their sum) over the Δ⊥ / Δ⁺ / Δ⁻ plane of ``task`` (None: the total loss).

    ``loss[task][ib][ia]`` is the loss at (a = axis[ia], b = axis[ib]); ``total`` sums the tasks.
    ``points`` gives the plane coordinates of θ_pre+Δ⊥, θ_pre+Δ⁺, θ_pre+Δ⁻ and of θ_pre's projection.
    Every grid point is one point (:mod:`tatr_core.points`), cached on its own (an interrupted landscape
    resumes; a finer grid reuses the points it shares) and computed by the current executor;
    ``on_update(partial)`` receives the record as points arrive, ``None`` where a point is still to come.
    ``failed`` lists the points that failed on every try (Ray); they stay ``None``.  Losses are
    evaluated in float32 whatever the evaluator's precision (bf16 blurs small loss differences).
    """
    return run(zoo, landscape_spec(zoo, task, **kw), evaluator=evaluator, progress=progress, on_update=on_update,
               use_cache=use_cache)


@register("landscape", "loss landscape", has_keys("tasks", "axis", "loss", "total", "points"),
          lambda args: f"{len(args['params']['axis'])}×{len(args['params']['axis'])} merged models")
def _landscape(zoo: Zoo, args: dict, ctx: Context) -> dict:
    params, split, sample = args["params"], args["split"], args["sample"]
    task, axis, exemplars, seed, orthogonal_fraction = (params[k] for k in ("task", "axis", "exemplars", "seed",
                                                                            "orthogonal_fraction"))
    evaluator, progress, on_update = ctx.evaluator, ctx.progress, ctx.on_update
    names = zoo.task_names
    base = f"plane-{digest(params | {'axis': None})}"  # the plane, whatever the grid on it
    memo: dict = {}

    def plane() -> dict:
        """θ_pre + Δ⊥ + a·u + b·v with u = Δ⁺ − Δ⊥, v = Δ⁻ − Δ⊥."""
        if not memo:
            parts = task_components(zoo, task, exemplars, seed, orthogonal_fraction)
            memo.update(parts=parts, origin=parts["orthogonal"], u=parts["positive"] - parts["orthogonal"],
                        v=parts["negative"] - parts["orthogonal"])
        return memo

    shared = Shared({f"{base}/{n}": (lambda n=n: plane()[n]) for n in ("origin", "u", "v")})
    source = {"plane": params | {"axis": None}}
    cells = [(ib, ia) for ib in range(len(axis)) for ia in range(len(axis))]
    points = [linear_point(zoo, f"landscape point ({axis[ia]:g}, {axis[ib]:g})",
                           [(f"{base}/origin", 1.0), (f"{base}/u", axis[ia]), (f"{base}/v", axis[ib])],
                           names, split, sample, seed, source, precision="fp32") for ib, ia in cells]
    loss = {t: [[None] * len(axis) for _ in axis] for t in names}
    acc = {t: [[None] * len(axis) for _ in axis] for t in names}

    def grid_total() -> list:
        return [[None if any(loss[t][ib][ia] is None for t in names) else sum(loss[t][ib][ia] for t in names)
                 for ia in range(len(axis))] for ib in range(len(axis))]

    def record_now() -> dict:
        return {"task": task, "tasks": names, "axis": axis, "params": params, "split": split, "sample": sample,
                "loss": loss, "accuracy": acc, "total": grid_total()}

    def arrived(n: int, result: dict) -> None:
        ib, ia = cells[n]
        for t in names:
            loss[t][ib][ia] = result[t]["loss"]
            acc[t][ib][ia] = result[t]["accuracy"]
        if on_update is not None:
            on_update(record_now())

    outcome = run_points(zoo, points, shared=shared, evaluator=evaluator, progress=progress, on_result=arrived,
                     what="landscape points")
    p = plane()
    pa, pb = plane_projection(zoo.task_vectors.pretrained - (zoo.task_vectors.pretrained + p["origin"]), p["u"], p["v"])
    record = {
        **record_now(),
        "points": {"orthogonal": [0.0, 0.0], "positive": [1.0, 0.0], "negative": [0.0, 1.0], "pretrained": [pa, pb]},
        "norms": {name: float(part.norm()) for name, part in p["parts"].items()},
    }
    outcome.mark_failures(record)
    return record
