"""The device-resident core: every merge and analysis computes on the device of its inputs, and the
memory rule decides what lives on the device (tatr_core/placement.py).

No test needs a GPU.  A CUDA box makes a tensor created without ``device=`` on the CPU, next to
inputs on the GPU; here the default device is set to ``meta`` while the inputs stay on the CPU, so
any such tensor lands on ``meta`` and the computation fails ("Tensor on device cpu is not on the
expected device meta"), as it would fail on the GPU.  The one test that runs on CUDA is skipped here.
"""
from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from tatr_core import placement
from tatr_core.analysis.components import plane_projection, split_by_product
from tatr_core.analysis.geometry import task_vector_geometry
from tatr_core.analysis.tsv_view import singular_task_interference
from tatr_core.merge import REGISTRY, merge
from tatr_core.merge.fisher import fisher_merge
from tatr_core.merge.regmean import regmean_linear
from tatr_core.placement import Residency, describe_plan, plan
from tatr_core.trust_region import SENSITIVITIES, sensitivity, top_k_mask
from tatr_core.vectors import TaskVectors


@contextmanager
def default_device(device: str):
    torch.set_default_device(device)
    try:
        yield
    finally:
        torch.set_default_device(None)


def small_task_vectors(K: int = 3) -> tuple[TaskVectors, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    pre = {"a.weight": torch.randn(12, 8, generator=g, dtype=torch.float64),
           "a.bias": torch.randn(12, generator=g, dtype=torch.float64),
           "b.weight": torch.randn(8, 12, generator=g, dtype=torch.float64), "steps": torch.tensor(3)}
    fts = [{k: v + 0.1 * torch.randn(v.shape, generator=g, dtype=torch.float64) if v.is_floating_point() else v
            for k, v in pre.items()} for _ in range(K)]
    tv = TaskVectors.from_state_dicts(pre, fts)
    grads = torch.rand(K, tv.N, generator=g, dtype=torch.float64)
    return tv, grads, grads - 0.5


TRAINING_FREE = [name for name, spec in REGISTRY.items() if not spec.uses_data]


@pytest.mark.parametrize("method", TRAINING_FREE)
def test_every_training_free_merge_allocates_where_its_inputs_are(method):
    tv, grads, signed = small_task_vectors()
    settings = [(0.0, None)] + ([(0.2, s) for s in SENSITIVITIES] if REGISTRY[method].plugin else [])
    for tau, variant in settings:
        expected = merge(tv, method, tau=tau, sensitivity=variant, grads=grads, signed_grads=signed).theta
        with default_device("meta"):
            got = merge(tv, method, tau=tau, sensitivity=variant, grads=grads, signed_grads=signed).theta
        assert got.device.type == "cpu" and torch.equal(got, expected), (method, tau, variant)


def test_the_analyses_math_allocates_where_its_inputs_are():
    tv, grads, signed = small_task_vectors()
    d = tv.deltas
    grams = [torch.eye(8, dtype=torch.float64) + 0.1] * 2
    weights = [d[0, :96].view(12, 8), d[1, :96].view(12, 8)]
    svds = []
    for w in weights:
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        svds.append((u[:, :3], s[:3], vh[:3].T))

    def run():
        return [top_k_mask(d[0], 7), split_by_product(d.sum(0), signed[0] * d[1], 0.5),
                plane_projection(d[0], d[1], d[2]), fisher_merge(d, grads), regmean_linear(grams, weights, 0.9),
                singular_task_interference(svds[0], svds[1])]

    expected = run()
    with default_device("meta"):
        got = run()
    assert torch.equal(got[0], expected[0])
    assert all(torch.equal(got[1][c], expected[1][c]) for c in expected[1])
    assert got[2] == expected[2] and got[5] == expected[5]
    assert torch.equal(got[3], expected[3]) and torch.equal(got[4], expected[4])


def test_geometry_allocates_where_the_task_vectors_are(micro_zoo):
    expected = task_vector_geometry(micro_zoo)
    micro_zoo.task_vectors  # built outside: the zoo's own tensors are on the CPU
    with default_device("meta"):
        got = task_vector_geometry(micro_zoo)
    assert got == expected


def test_sensitivity_streams_host_gradients_to_the_device_of_the_task_vectors(monkeypatch):
    """Gradients too large for the GPU stay in host memory; Ω reads them in column blocks and is
    computed where the task vectors are (here ``meta`` stands in for the GPU)."""
    tv, grads, signed = small_task_vectors()
    monkeypatch.setattr("tatr_core.trust_region.CHUNK", 16)  # several blocks
    moved = []
    real_to = torch.Tensor.to

    def spy(self, *args, **kwargs):
        moved.append(tuple(self.shape))
        return real_to(self, *args, **kwargs)

    device_deltas = tv.deltas.to("meta")
    monkeypatch.setattr(torch.Tensor, "to", spy)
    for variant in ("gradient", "ntk", "positive", "negative"):
        moved.clear()
        omega = sensitivity(device_deltas, variant, grads=grads, signed_grads=signed)
        assert omega.device.type == "meta" and omega.shape == (tv.N,)
        assert moved and all(shape[0] == 3 and shape[1] <= 16 for shape in moved), variant  # blocks, never whole
    # on one device the blocks are the same tensors: the CPU result is the reference's
    monkeypatch.setattr(torch.Tensor, "to", real_to)
    reference = sum(grads[j] * tv.deltas[i].abs() for i in range(3) for j in range(3) if i != j)
    assert torch.allclose(sensitivity(tv.deltas, "gradient", grads=grads), reference, rtol=1e-12, atol=0)


# ------------------------------------------------------------------------------ the memory rule
GB = 10**9


def test_memory_rule_on_an_80_gb_gpu():
    b32 = plan(8, 87_800_000, 4, "cuda", free=80 * GB)
    assert b32.vectors_resident and b32.gradient_bytes <= b32.room  # everything on the device
    assert describe_plan(b32).startswith("task vectors on cuda (2.9 GiB); gradients on cuda (5.2 GiB a set)")
    l14 = plan(20, 304_000_000, 4, "cuda", free=80 * GB)
    assert l14.vectors_resident and l14.gradient_bytes > l14.room  # gradients streamed from host memory
    assert "streamed to cuda in blocks" in describe_plan(l14)
    small = plan(20, 304_000_000, 4, "cuda", free=16 * GB)
    assert not small.vectors_resident and "merges run on the CPU" in describe_plan(small)
    # the rule's arithmetic: (K + 1 + 4)·N·b within half the free memory
    edge = (8 + 1 + 4) * 1000 * 4
    assert plan(8, 1000, 4, "cuda", free=2 * edge).vectors_resident
    assert not plan(8, 1000, 4, "cuda", free=2 * edge - 2).vectors_resident
    assert plan(8, 1000, 4, "cpu").vectors_resident and describe_plan(plan(8, 1000, 4, "cpu")).endswith("(CPU)")


def test_residency_moves_each_set_once_and_keeps_within_its_room(monkeypatch):
    tv, grads, signed = small_task_vectors()
    item = tv.pretrained.element_size()
    vectors = (tv.K + 1 + 4) * tv.N * item
    gset = {"grads": grads, "signed_grads": signed}  # 2·K·N numbers
    # room for exactly one gradient set next to the task vectors
    monkeypatch.setattr(placement, "free_memory_bytes", lambda device: 2 * (vectors + 2 * tv.K * tv.N * item))
    res = Residency("meta")
    on = res.vectors(tv)
    assert on.deltas.device.type == "meta" and on.pretrained.device.type == "meta" and res.vectors(tv) is on
    first = res.inputs("grads-a", gset)
    assert first["grads"].device.type == "meta" and res.inputs("grads-a", gset) is first  # moved once
    assert res.inputs("placed", first) is first  # already there: no copy, no room taken
    second = res.inputs("grads-b", gset)
    assert second["grads"].device.type == "meta" and "grads-a" not in res._inputs  # the older set made room
    huge = {"g": torch.zeros(3 * tv.K, tv.N, dtype=torch.float64)}
    assert res.inputs("huge", huge) is huge  # never fits: stays in host memory
    assert Residency("cpu").inputs("x", gset) is gset


def test_on_the_cpu_the_zoo_keeps_one_copy(micro_zoo):
    from tatr_core.gradients import compute_task_gradients

    assert micro_zoo.task_vectors is micro_zoo.host_task_vectors
    g = compute_task_gradients(micro_zoo, 8, 0)
    assert g.abs_mean.device.type == "cpu"
    assert micro_zoo.residency.inputs("again", {"grads": g.abs_mean})["grads"] is g.abs_mean


def test_compute_device_follows_tatr_device(monkeypatch):
    from tatr_core.errors import TatrError

    monkeypatch.setenv("TATR_DEVICE", "cpu")
    assert placement.compute_device() == torch.device("cpu")
    monkeypatch.setenv("TATR_DEVICE", "potato")
    with pytest.raises(TatrError, match="TATR_DEVICE='potato' is not a device"):
        placement.compute_device()
    if not torch.cuda.is_available():
        monkeypatch.setenv("TATR_DEVICE", "cuda")
        with pytest.raises(TatrError, match="sees no CUDA GPU"):
            placement.compute_device()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (runs on the device machine)")
def test_tatr_on_cuda_gives_the_cpu_mask():
    tv, grads, _ = small_task_vectors(K=4)
    cpu = merge(tv, "tatr", tau=0.1, grads=grads)
    on = TaskVectors(tv.layout, tv.pretrained.cuda(), tv.deltas.cuda(), tv.names, tv.template)
    gpu = merge(on, "tatr", tau=0.1, grads=grads)  # host gradients, streamed
    assert gpu.theta.device.type == "cuda"
    assert torch.equal(gpu.trust_region.keep.cpu(), cpu.trust_region.keep)
    assert torch.allclose(gpu.theta.cpu(), cpu.theta, rtol=1e-12, atol=1e-12)


def test_a_named_input_asked_for_first_still_lands_on_the_device(micro_zoo, monkeypatch):
    """A fresh process (a Ray worker) may be handed a point's shared inputs before it has used the task
    vectors; the zoo places the task vectors first, so the inputs are still planned for and placed once."""
    import dataclasses

    monkeypatch.setattr(placement, "free_memory_bytes", lambda device: 10**9)
    zoo = dataclasses.replace(micro_zoo)  # its own cached task vectors and residency
    zoo.__dict__["residency"] = Residency("meta")
    plane = {"u": torch.zeros(zoo.host_task_vectors.N)}
    placed = zoo.resident("plane", plane)
    assert placed["u"].device.type == "meta" and zoo.resident("plane", plane) is placed
    assert zoo.task_vectors.deltas.device.type == "meta"
