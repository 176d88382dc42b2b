"""Knowledge conflict (Definition 1 / Eq. 3).

C_{j|i} = L_j(θ_MTL({θ_k}_{k=1..K})) − L_j(θ_MTL({θ_k}_{k≠i})): how much adding task i to the
merge raises task j's loss (positive = conflict).  The accuracy form is the accuracy task j
loses by adding task i, acc_j(without i) − acc_j(all).  C = Σ_{i≠j} C_{j|i}.  K + 1 merges:
all tasks, then each leave-one-out set, with the method re-run on that set (the trust region,
TIES' elected signs and TSV's rank budget all depend on which tasks take part).
"""
from __future__ import annotations

from ..cache import cache_dir, digest, honours_no_cache, lookup_json, write_json_atomic
from ..errors import TatrError
from ..evaluate import Evaluator
from ..runs import BASELINES, evaluate_merge, merge_inputs, merge_tasks, method_params
from ..zoo import Progress, Zoo, no_progress


@honours_no_cache
def conflict_matrix(zoo: Zoo, method: str = "task_arithmetic", *, lam=None, density=None, tau=None, sensitivity=None,
                    exemplars: int | None = None, seed: int = 0, split: str = "test", sample: int | None = None,
                    evaluator: Evaluator | None = None, progress: Progress = no_progress,
                    use_cache: bool = True, **extra) -> dict:
    """``{"tasks", "method", "params", "loss": K×K, "accuracy": K×K, "full", "without", "total_loss", "total_accuracy"}``.

    ``loss[j][i]`` is C_{j|i} (row j: the task that suffers; column i: the task added); the
    diagonal is ``None``.  ``full[task]`` and ``without[i][task]`` hold the two evaluations
    every entry is the difference of.
    """
    if method in BASELINES:
        raise TatrError(f"knowledge conflict needs a merge method, not '{method}'")
    names = zoo.task_names
    if len(names) < 2:
        raise TatrError("knowledge conflict needs at least two tasks")
    params = method_params(method, lam=lam, density=density, tau=tau, sensitivity=sensitivity,
                           exemplars=exemplars, seed=seed, **extra)
    key = digest({"zoo": zoo.key, "method": method, "params": params, "split": split, "sample": sample})
    path = cache_dir("results", zoo.key) / f"conflict-{method}-{key}.json"
    if use_cache and (cached := lookup_json(path)) is not None:
        return cached
    evaluator = evaluator or Evaluator(zoo)
    inputs = merge_inputs(zoo, params, progress)
    K = len(names)

    def run(indices, n: int):
        step = lambda f, m: progress((n + f) / (K + 1), m)  # noqa: E731  (fits report inside each merge)
        res = merge_tasks(zoo, method, params, inputs, indices, progress=step)
        return {t: r.as_dict() for t, r in evaluate_merge(evaluator, res, names, split, sample, seed).items()}

    progress(0.0, f"merging all {K} tasks")
    full = run(None, 0)
    without = {}
    for i, name in enumerate(names):
        progress((i + 1) / (K + 1), f"merging without {name}")
        without[name] = run([k for k in range(K) if k != i], i + 1)
    loss = [[None if i == j else full[tj]["loss"] - without[ti][tj]["loss"] for i, ti in enumerate(names)]
            for j, tj in enumerate(names)]
    acc = [[None if i == j else without[ti][tj]["accuracy"] - full[tj]["accuracy"] for i, ti in enumerate(names)]
           for j, tj in enumerate(names)]
    record = {
        "tasks": names, "method": method, "params": params, "split": split, "sample": sample,
        "loss": loss, "accuracy": acc, "full": full, "without": without,
        "total_loss": sum(v for row in loss for v in row if v is not None),
        "total_accuracy": sum(v for row in acc for v in row if v is not None),
    }
    if use_cache:
        write_json_atomic(path, record)
    progress(1.0, "conflict matrix done")
    return record
