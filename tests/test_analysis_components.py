"""Δ⁺ / Δ⁻ / Δ⊥ components and the loss landscape against direct computations."""
from __future__ import annotations

import pytest
import torch

from tatr_core.analysis.components import (component_accuracy, grid_axis, loss_landscape, merged_component_accuracy,
                                           merged_components, plane_projection, split_components, task_components)
from tatr_core.errors import TatrError
from tatr_core.evaluate import Evaluator
from tatr_core.gradients import compute_task_gradients


def test_split_is_exact_disjoint_and_signed():
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(1000, generator=g, dtype=torch.float64)
    delta[:50] = 0
    grad = torch.randn(1000, generator=g, dtype=torch.float64)
    parts = split_components(delta, grad, 0.6)
    assert torch.equal(parts["positive"] + parts["negative"] + parts["orthogonal"], delta)
    supports = [(p != 0) for p in parts.values()]
    assert not bool((supports[0] & supports[1]).any() | (supports[0] & supports[2]).any() | (supports[1] & supports[2]).any())
    product = grad * delta
    assert bool((product[parts["positive"] != 0] > 0).all()) and bool((product[parts["negative"] != 0] < 0).all())
    orth = parts["orthogonal"] != 0
    assert int(orth.sum()) == int(0.6 * 950)  # a fraction of the non-zero entries
    assert float(product[orth].abs().max()) <= float(product[~orth & (delta != 0)].abs().min())
    with pytest.raises(TatrError):
        split_components(delta, grad, 1.5)


def test_components_of_the_other_tasks(micro_zoo):
    z = micro_zoo
    parts = task_components(z, "shapes", exemplars=8)
    j = z.task_names.index("shapes")
    others = sum(z.task_vectors.deltas[k] for k in range(4) if k != j)
    torch.testing.assert_close(sum(parts.values()), others, rtol=0, atol=1e-6)
    g = compute_task_gradients(z, 8, 0).mean[j]
    assert bool((g * parts["positive"] >= 0).all()) and bool((g * parts["negative"] <= 0).all())


def test_component_accuracy_matches_explicit_evaluation(micro_zoo):
    z = micro_zoo
    res = component_accuracy(z, lam=0.5, exemplars=8, sample=60, use_cache=False)
    ev = Evaluator(z)
    parts = task_components(z, "colours", exemplars=8)
    for name in ("positive", "negative", "orthogonal"):
        r = ev.evaluate(z.task_vectors.pretrained + 0.5 * parts[name], ["colours"], sample=60)["colours"]
        assert res["per_task"]["colours"][name]["accuracy"] == r.accuracy
        assert res["per_task"]["colours"][name]["loss"] == pytest.approx(r.loss)
    shares = sum(res["per_task"]["colours"][n]["norm_share"] for n in ("positive", "negative", "orthogonal"))
    assert shares == pytest.approx(1.0)


@pytest.mark.parametrize("task", ["textures", None])
def test_landscape_corners_are_the_explicit_points(micro_zoo, task):
    z = micro_zoo
    res = loss_landscape(z, task, start=0.0, stop=1.0, step=0.5, exemplars=8, sample=40, use_cache=False)
    assert res["axis"] == [0.0, 0.5, 1.0]
    ev = Evaluator(z)
    parts = task_components(z, task, exemplars=8)
    pre = z.task_vectors.pretrained
    for (ia, ib), name in (((0, 0), "orthogonal"), ((2, 0), "positive"), ((0, 2), "negative")):
        r = ev.evaluate(pre + parts[name], sample=40)
        for t in z.task_names:
            assert res["loss"][t][ib][ia] == pytest.approx(r[t].loss, rel=1e-5)
    assert res["total"][1][1] == pytest.approx(sum(res["loss"][t][1][1] for t in z.task_names))
    # θ_pre's projection against a direct least-squares solve in float64
    u = (parts["positive"] - parts["orthogonal"]).double()
    v = (parts["negative"] - parts["orthogonal"]).double()
    design = torch.stack([u, v], 1)
    direct = torch.linalg.lstsq(design, (-parts["orthogonal"]).double().unsqueeze(1)).solution.squeeze(1)
    assert res["points"]["pretrained"] == pytest.approx(direct.tolist(), abs=1e-6)
    assert plane_projection(-parts["orthogonal"], u, v) == pytest.approx(direct.tolist(), abs=1e-6)


def test_grid_axis():
    assert grid_axis() == [round(-0.2 + 0.1 * i, 10) for i in range(15)] and grid_axis()[2] == 0.0
    with pytest.raises(TatrError):
        grid_axis(1.0, 0.0, 0.1)


def test_figure_2a_merges_one_component_of_all_task_vectors(micro_zoo):
    """θ^c = θ_pre + λ Σ_k Δ_k ⊙ 1_c, split by s = Σ_{i≠j} g_j ⊙ Δ_i written out pair by pair; with no Δ⊥
    band θ^pos and θ^neg are exactly Table 6's TATR positive and negative merges."""
    from tatr_core.merge import merge

    z, tv = micro_zoo, micro_zoo.task_vectors
    g = compute_task_gradients(z, 8, 0).mean
    cross = sum(g[j] * tv.deltas[i] for j in range(tv.K) for i in range(tv.K) if i != j)
    total = tv.deltas.sum(0)
    parts = merged_components(z, exemplars=8, orthogonal_fraction=0.5)
    torch.testing.assert_close(sum(parts.values()), total, rtol=0, atol=0)
    orth = parts["orthogonal"] != 0
    assert int(orth.sum()) == int(0.5 * int((total != 0).sum()))
    assert float(cross[orth].abs().max()) <= float(cross[(parts["positive"] != 0) | (parts["negative"] != 0)].abs().min())
    assert bool((cross[parts["positive"] != 0] > 0).all()) and bool((cross[parts["negative"] != 0] < 0).all())

    no_band = merged_components(z, exemplars=8, orthogonal_fraction=0.0)
    for name in ("positive", "negative"):
        table6 = merge(tv, "tatr", lam=1.0, tau=0.01, sensitivity=name, signed_grads=g).theta - tv.pretrained
        torch.testing.assert_close(no_band[name], table6, rtol=0, atol=1e-6)

    res = merged_component_accuracy(z, lam=0.5, exemplars=8, orthogonal_fraction=0.5, sample=60, use_cache=False)
    ev = Evaluator(z)
    for name in ("positive", "negative", "orthogonal"):
        got = ev.evaluate(tv.pretrained + 0.5 * parts[name], sample=60)
        assert {t: r.accuracy for t, r in got.items()} == {t: r["accuracy"] for t, r in res["models"][name]["tasks"].items()}
        assert res["models"][name]["average_accuracy"] == pytest.approx(sum(r.accuracy for r in got.values()) / tv.K)
    ta = ev.evaluate(tv.pretrained + 0.5 * total, sample=60)
    assert res["models"]["all"]["average_accuracy"] == pytest.approx(sum(r.accuracy for r in ta.values()) / tv.K)
    assert sum(res["models"][n]["norm_share"] for n in ("positive", "negative", "orthogonal")) == pytest.approx(1.0)
    assert res["params"]["orthogonal_fraction"] == 0.5
    with pytest.raises(TatrError, match="orthogonal fraction must be in"):
        merged_component_accuracy(z, orthogonal_fraction=1.5, use_cache=False)


def test_every_component_figure_states_its_orthogonal_band(micro_zoo):
    from tatr_core.figures import landscape_figure, merged_components_figure, per_task_components_figure

    merged = merged_component_accuracy(micro_zoo, exemplars=8, orthogonal_fraction=0.8, sample=40)
    per_task = component_accuracy(micro_zoo, exemplars=8, orthogonal_fraction=0.8, sample=40)
    plane = loss_landscape(micro_zoo, None, start=0.0, stop=1.0, step=0.5, exemplars=8, sample=20,
                           orthogonal_fraction=0.8)
    for fig in (merged_components_figure(merged), per_task_components_figure(per_task), landscape_figure(plane)):
        assert "the 80% of non-zero entries with the smallest" in fig.layout.title.text
