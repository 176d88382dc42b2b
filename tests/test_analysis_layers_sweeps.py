"""Layer sensitivity against direct per-tensor computations; sweeps against single evaluations."""
from __future__ import annotations

import pytest
import torch

from tatr_core.analysis.layers import block_of, layer_sensitivity
from tatr_core.analysis.sweeps import sweep
from tatr_core.errors import TatrError
from tatr_core.gradients import compute_task_gradients
from tatr_core.merge import compute_trust_region
from tatr_core.runs import evaluate_method
from tatr_core.trust_region import sensitivity


def test_layer_sensitivity_matches_direct_sums(micro_zoo):
    z = micro_zoo
    res = layer_sensitivity(z, "gradient", tau=0.05, exemplars=8, use_cache=False)
    tv = z.task_vectors
    g = compute_task_gradients(z, 8, 0)
    omega = sensitivity(tv.deltas, "gradient", grads=g.abs_mean)
    region = compute_trust_region(tv, 0.05, "gradient", grads=g.abs_mean)
    for idx in (0, 5, len(res["tensors"]) - 1):
        key = res["tensors"][idx]
        sl = next(s for k, s, _ in tv.layout.items() if k == key)
        assert res["omega"][idx] == pytest.approx(float(omega[sl].double().mean()), rel=1e-6)
        for j, t in enumerate(z.task_names):  # Σ_{i≠j} G_j ⊙ |Δ_i| with an explicit loop
            direct = sum(g.abs_mean[j, sl] * tv.deltas[i, sl].abs() for i in range(tv.K) if i != j)
            assert res["per_task"][t][idx] == pytest.approx(float(direct.double().mean()), rel=1e-5)
    counted = sum(f * n for f, n in zip(res["excluded"], res["sizes"]))
    assert counted == pytest.approx(region.excluded) and res["excluded_total"] == region.excluded
    # by depth (the head's proj comes before conv1 in the weights; Figure 4 reads from the input up)
    for blocks in (res["block_omega"], res["block_excluded"], *res["block_per_task"].values()):
        assert list(blocks) == ["embed", "block 0", "block 1", "head"]
    from tatr_core.analysis.layers import block_depth

    assert sorted(["head", "block 10", "block 2", "embed"], key=block_depth) == ["embed", "block 2", "block 10", "head"]
    assert block_of("transformer.resblocks.11.mlp.c_fc.weight") == "block 11" and block_of("proj") == "head"


def test_tau_sweep_streams_points_and_starts_at_task_arithmetic(micro_zoo):
    from tatr_core.cache import recompute

    seen = []
    with recompute():  # every point computed, in order (cached points would be delivered first)
        res = sweep(micro_zoo, "tatr", "tau", [0.0, 0.01, 0.05], sensitivity="zero-shot",
                    on_point=lambda v, r: seen.append((v, r["average_accuracy"])))
    assert [v for v, _ in seen] == [0.0, 0.01, 0.05]
    ta = evaluate_method(micro_zoo, "task_arithmetic")
    assert res["points"][0]["tasks"] == ta["tasks"]  # τ = 0 is Task Arithmetic
    assert res["points"][2]["excluded"] == int(0.05 * micro_zoo.task_vectors.N)
    one = evaluate_method(micro_zoo, "tatr", tau=0.01, sensitivity="zero-shot")
    assert res["points"][1]["average_accuracy"] == one["average_accuracy"]


def test_lambda_and_exemplar_sweeps(micro_zoo):
    lam = sweep(micro_zoo, "task_arithmetic", "lam", [0.0, 0.3])
    pre = evaluate_method(micro_zoo, "pretrained")
    assert lam["points"][0]["tasks"] == pre["tasks"]  # λ = 0 is the pretrained model
    ex = sweep(micro_zoo, "tatr", "exemplars", [1, 4])
    assert [p["params"]["exemplars"] for p in ex["points"]] == [1, 4]
    with pytest.raises(TatrError, match="can sweep"):
        sweep(micro_zoo, "tatr", "density", [0.1])
    with pytest.raises(TatrError, match="is swept"):
        sweep(micro_zoo, "tatr", "tau", [0.1], tau=0.2)


def test_omega_histogram_counts_every_dimension_and_marks_the_threshold(micro_zoo):
    from tatr_core.analysis.layers import omega_histogram

    z = micro_zoo
    res = layer_sensitivity(z, "gradient", tau=0.02, exemplars=8, use_cache=False)
    h = res["histogram"]
    assert sum(h["counts"]) + h["zeros"] + h["negative"] == z.task_vectors.N == h["n"]
    g = compute_task_gradients(z, 8, 0)
    omega = sensitivity(z.task_vectors.deltas, "gradient", grads=g.abs_mean).double()
    k = res["excluded_total"]
    assert h["threshold"] == pytest.approx(float(omega.sort(descending=True).values[k - 1]), rel=1e-6)
    # a direct count of one bin
    edges = h["log10_edges"]
    inside = ((omega > 0) & (omega.log10() >= edges[10]) & (omega.log10() < edges[11])).sum()
    assert abs(h["counts"][10] - int(inside)) <= 1  # histc and a float comparison may disagree at a bin edge
    # signed values: negatives and zeros counted apart; nothing excluded gives no threshold
    small = omega_histogram(torch.tensor([-2.0, 0.0, 0.0, 1e-3, 1e-1, 10.0]), None, bins=4)
    assert small["negative"] == 1 and small["zeros"] == 2 and sum(small["counts"]) == 3 and small["threshold"] is None


@pytest.mark.parametrize("chunk", [None, 4099])
def test_task_vector_geometry_matches_pairwise_loops(micro_zoo, monkeypatch, chunk):
    from tatr_core.analysis import geometry
    from tatr_core.analysis.geometry import task_vector_geometry

    if chunk:  # many column blocks, the last one short
        monkeypatch.setattr(geometry, "CHUNK", chunk)
        assert micro_zoo.task_vectors.N > 10 * chunk
    geo = task_vector_geometry(micro_zoo)
    d = micro_zoo.task_vectors.deltas.double()
    for i in range(d.shape[0]):
        assert geo["norms"][i] == pytest.approx(float(torch.sqrt((d[i] * d[i]).sum())), rel=1e-9)
        assert geo["cosine"][i][i] == pytest.approx(1.0)
        for j in range(d.shape[0]):
            cos = float((d[i] * d[j]).sum() / (d[i].norm() * d[j].norm()))
            assert geo["cosine"][i][j] == pytest.approx(cos, rel=1e-9, abs=1e-12)
            k = d.shape[1] // 10
            # a task's top 10%: exactly k dimensions, ties by the lower index (a stable sort)
            top_i = set(torch.sort(d[i].abs(), descending=True, stable=True).indices[:k].tolist())
            top_j = set(torch.sort(d[j].abs(), descending=True, stable=True).indices[:k].tolist())
            assert geo["overlap"][i][j] == pytest.approx(len(top_i & top_j) / k)


def test_any_declared_numeric_parameter_can_be_swept(micro_zoo):
    from tatr_core import figures
    from tatr_core.analysis.sweeps import sweepable

    assert sweepable("dare")["drop_rate"] == [0.0, 0.1, 0.3, 0.5, 0.7, 0.9] and "lam" not in sweepable("average")
    res = sweep(micro_zoo, "dare", "drop_rate", [0.0, 0.5])
    assert res["points"][0]["tasks"] == evaluate_method(micro_zoo, "task_arithmetic")["tasks"]  # p = 0 is TA
    assert res["points"][1]["tasks"] == evaluate_method(micro_zoo, "dare", drop_rate=0.5)["tasks"]
    fig = figures.sweep_figure(res)
    assert fig.layout.xaxis.title.text == "drop rate p"
    with pytest.raises(TatrError, match="'ties' can sweep"):
        sweep(micro_zoo, "ties", "drop_rate", [0.1])


def test_a_grid_extends_past_its_edge_within_the_parameters_range(micro_zoo):
    from tatr_core.analysis.sweeps import extended_grid

    assert extended_grid("tatr", "tau")[-3:] == [0.1, 0.2, 0.4]
    assert extended_grid("tatr", "lam")[-3:] == [2.0, 4.0, 8.0]
    assert extended_grid("dare", "drop_rate")[-1] == 0.9  # 1.8 is no probability
    assert extended_grid("tatr", "exemplars", micro_zoo)[-1] <= 300  # the micro zoo's 300 training images per task
