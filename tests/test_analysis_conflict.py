"""C_{j|i} against explicit pairs of merges and evaluations (micro zoo)."""
from __future__ import annotations

import pytest

from tatr_core.analysis.conflict import conflict_matrix
from tatr_core.errors import TatrError
from tatr_core.evaluate import Evaluator
from tatr_core.gradients import compute_task_gradients
from tatr_core.merge import merge


@pytest.mark.parametrize("method,kw", [("task_arithmetic", {"lam": 0.3}),
                                       ("tatr", {"tau": 0.05, "exemplars": 8}),
                                       ("ties", {"lam": 0.5})])
def test_conflict_entries_are_differences_of_two_evaluations(micro_zoo, method, kw):
    z = micro_zoo
    res = conflict_matrix(z, method, use_cache=False, **kw)
    ev = Evaluator(z)
    tv = z.task_vectors
    g = compute_task_gradients(z, 8, 0) if method == "tatr" else None
    args = {k: v for k, v in kw.items() if k != "exemplars"}

    def explicit(indices):
        sub = tv.subset(indices)
        extra = {"grads": g.abs_mean[indices]} if g is not None else {}
        return ev.evaluate(merge(sub, method, **args, **extra).theta)

    full = explicit(list(range(tv.K)))
    names = z.task_names
    for i, ti in enumerate(names):
        without = explicit([k for k in range(tv.K) if k != i])
        for j, tj in enumerate(names):
            if i == j:
                assert res["loss"][j][i] is None and res["accuracy"][j][i] is None
                continue
            assert res["loss"][j][i] == pytest.approx(full[tj].loss - without[tj].loss, abs=1e-9)
            assert res["accuracy"][j][i] == pytest.approx(without[tj].accuracy - full[tj].accuracy, abs=1e-12)
    total = sum(v for row in res["loss"] for v in row if v is not None)
    assert res["total_loss"] == pytest.approx(total)
    assert res["full"][names[0]]["loss"] == pytest.approx(full[names[0]].loss)


def test_conflict_is_cached_and_refuses_baselines(micro_zoo):
    a = conflict_matrix(micro_zoo, "task_arithmetic", lam=0.3, sample=40)
    b = conflict_matrix(micro_zoo, "task_arithmetic", lam=0.3, sample=40)
    assert a == b and a["full"]["mnist"]["n"] == 40
    with pytest.raises(TatrError, match="needs a merge method"):
        conflict_matrix(micro_zoo, "pretrained")


def test_conflict_matrix_streams_partial_records_that_draw(micro_zoo):
    from tatr_core.figures import conflict_figure

    partials = []
    record = conflict_matrix(micro_zoo, "task_arithmetic", sample=12, on_update=partials.append, use_cache=False)
    K = len(micro_zoo.tasks)
    assert len(partials) == K + 1 and partials[-1]["loss"] == record["loss"]
    first = partials[0]  # only the merge of all tasks so far: no entry yet, and the figure says so
    assert all(v is None for row in first["loss"] for v in row)
    for partial in partials:
        fig = conflict_figure(partial, "loss")
        assert ("so far" in fig.layout.title.text) == any(v is None for j, row in enumerate(partial["loss"])
                                                          for i, v in enumerate(row) if i != j)
