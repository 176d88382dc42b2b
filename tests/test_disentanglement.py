"""The weight-disentanglement error ξ(α₁, α₂) against a slow float64 reference written from its definition."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch.func import functional_call

from tatr_core.analysis.disentanglement import disagreement, disentanglement, disentanglement_spec
from tatr_core.errors import TatrError
from tatr_core.evaluate import sample_indices
from tatr_core.models import OPENAI_MEAN, OPENAI_STD, channel_stats, head_logits, normalise

AXIS = dict(start=-1.5, stop=1.5, step=1.5)  # α ∈ {-1.5, 0, 1.5}
SAMPLE = 40


def reference_xi(zoo, a: str, b: str, axis: list[float], sample: int) -> list[list[float]]:
    """ξ(α₁, α₂) = Σ_t mean_x 1[f(x; θ0 + α_t τ_t) ≠ f(x; θ0 + α₁τ₁ + α₂τ₂)], every model in float64, one image
    at a time (the same seeded sample of each task's test split)."""
    encoder = zoo.make_encoder().double()
    tv = zoo.task_vectors
    mean, std = channel_stats(OPENAI_MEAN, OPENAI_STD)
    tau = {t: tv.deltas[zoo.task_names.index(t)].double() for t in (a, b)}

    def predictions(theta: torch.Tensor, task: str) -> list[int]:
        params = {k: v.double() for k, v in tv.layout.unflatten(theta).items()}
        images, _ = zoo.tasks[task].split("test")
        idx = sample_indices(len(images), sample, 0)
        out = []
        with torch.no_grad():
            for i in (idx.tolist() if idx is not None else range(len(images))):
                x = normalise(images[i:i + 1], mean.double(), std.double())
                z = functional_call(encoder, params, (x,), strict=False)
                out.append(int(head_logits(z, zoo.tasks[task].head.double()).argmax()))
        return out

    theta0 = tv.pretrained.double()
    xi = []
    for a2 in axis:
        row = []
        for a1 in axis:
            joint = theta0 + a1 * tau[a] + a2 * tau[b]
            err = 0.0
            for t, alpha in ((a, a1), (b, a2)):
                alone, both = predictions(theta0 + alpha * tau[t], t), predictions(joint, t)
                err += sum(x != y for x, y in zip(alone, both)) / len(alone)
            row.append(err)
        xi.append(row)
    return xi


def test_xi_equals_its_float64_reference(micro_zoo):
    a, b = micro_zoo.task_names[:2]
    record = disentanglement(micro_zoo, [a, b], sample=SAMPLE, **AXIS)
    assert record["axis"] == [-1.5, 0.0, 1.5] and record["tasks"] == [a, b]
    ref = reference_xi(micro_zoo, a, b, record["axis"], SAMPLE)
    # one image's prediction at a near-tie may flip between float32 and float64: at most one image per task
    assert sum(record["xi"], []) == pytest.approx(sum(ref, []), abs=2 / SAMPLE)
    assert sum(abs(x - y) for rx, ry in zip(record["xi"], ref) for x, y in zip(rx, ry)) <= 2 / SAMPLE
    # edge cases of the definition: nothing added, nothing changes; ξ at (α₁, 0) is task 2's term alone
    centre = record["axis"].index(0.0)
    assert record["xi"][centre][centre] == 0.0
    assert all(record["error"][a][centre][i] == 0.0 for i in range(3))
    assert all(record["error"][b][i][centre] == 0.0 for i in range(3))
    assert any(v > 0 for row in record["xi"] for v in row)  # this zoo's vectors do interfere somewhere
    xi = record["xi"]
    assert record["mean"] == pytest.approx(sum(map(sum, xi)) / 9)
    assert record["mean_unit"] == xi[centre][centre] == 0.0  # of -1.5, 0 and 1.5, only 0 lies in [0, 1]
    assert record["images"] == {a: SAMPLE, b: SAMPLE}


def test_xi_is_symmetric_in_its_two_tasks(micro_zoo):
    a, b = micro_zoo.task_names[1:3]
    one = disentanglement(micro_zoo, [a, b], sample=SAMPLE, **AXIS)
    other = disentanglement(micro_zoo, [b, a], sample=SAMPLE, **AXIS)
    n = len(one["axis"])
    for i, j in itertools.product(range(n), range(n)):
        assert one["xi"][i][j] == pytest.approx(other["xi"][j][i], abs=1e-12)


def test_disagreement_and_bad_requests(micro_zoo):
    assert disagreement([0, 1, 2, 3], [0, 1, 0, 0]) == 0.5
    with pytest.raises(ValueError):
        disagreement([0, 1], [0])
    a, b = micro_zoo.task_names[:2]
    with pytest.raises(TatrError, match="two different tasks"):
        disentanglement_spec(micro_zoo, [a, a])
    with pytest.raises(TatrError, match="two different tasks"):
        disentanglement_spec(micro_zoo, [a])
    with pytest.raises(TatrError, match="no-such-task|unknown task"):
        disentanglement_spec(micro_zoo, [a, "no-such-task"])
    with pytest.raises(TatrError, match="disentanglement grid"):
        disentanglement_spec(micro_zoo, [a, b], step=0.01)
    spec = disentanglement_spec(micro_zoo)
    assert spec.arguments["tasks"] == micro_zoo.task_names[:2] and len(spec.arguments["axis"]) == 7
