"""The six data-free baselines reviewers ask for (DARE, Consensus, MagMax, PCB, Iso-C, Iso-CTS), each
against its slow float64 reference in ``tests/reference.py``, with its edge cases; τ = 0 being the
plain method bit for bit and the plug-in leaving everything outside the trust region at θ_pre are
checked for every registered method in ``test_merge_math.py``."""
from __future__ import annotations

import pytest
import torch

import reference as ref
from tatr_core.merge import REGISTRY, merge, resolve_params
from tatr_core.merge.dare import dare_keep_masks
from tatr_core.vectors import TaskVectors
from test_merge_math import assert_state_close, random_models

NEW = ["dare", "consensus", "magmax", "pcb", "iso_c", "iso_cts"]


def models(K, seed=0, shapes=None):
    if shapes is None:
        return random_models(K, seed=seed)
    g = torch.Generator().manual_seed(seed)
    pre = {k: torch.randn(s, generator=g, dtype=torch.float64) for k, s in shapes.items()}
    fts = [{k: v + 0.1 * torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in pre.items()}
           for _ in range(K)]
    return pre, fts


def test_the_six_are_registered_with_sourced_defaults_and_the_plugin():
    for name in NEW:
        spec = REGISTRY[name]
        assert spec.plugin and not spec.uses_data and spec.reference, name
        assert all(p.source for p in spec.parameters if p.name != "seed"), name
        assert spec.module == f"tatr_core.merge.{'iso' if name.startswith('iso') else name}"
    assert resolve_params("dare") == {"lam": 0.3, "drop_rate": 0.5, "base": "task_arithmetic", "density": 0.2,
                                      "merge_func": "sum", "seed": 0, "tau": 0.0}
    assert resolve_params("magmax")["lam"] == 0.5 and resolve_params("pcb")["density"] == 0.05
    assert resolve_params("pcb", variant="released")["density"] == 0.1
    assert resolve_params("iso_cts", tau=0.01)["sensitivity"] == "gradient"


@pytest.mark.parametrize("K", [1, 2, 4])
@pytest.mark.parametrize("base,merge_func", [("task_arithmetic", "sum"), ("ties", "sum"), ("ties", "mean")])
def test_dare_matches_reference(K, base, merge_func):
    pre, fts = models(K, seed=3)
    tv = TaskVectors.from_state_dicts(pre, fts)
    res = merge(tv, "dare", drop_rate=0.3, base=base, density=0.4, lam=0.7, seed=5, merge_func=merge_func)
    keeps = list(dare_keep_masks(K, tv.N, 0.3, 5))
    assert_state_close(tv.to_state_dict(res.theta), ref.dare(pre, fts, 0.3, 0.7, base, 0.4, keeps, merge_func))


def test_dare_draws_are_seeded_unbiased_and_p0_is_the_base_method():
    pre, fts = models(3, seed=4)
    tv = TaskVectors.from_state_dicts(pre, fts)
    assert torch.equal(merge(tv, "dare", drop_rate=0.0).theta, merge(tv, "task_arithmetic").theta)
    assert torch.equal(merge(tv, "dare", drop_rate=0.0, base="ties").theta, merge(tv, "ties").theta)
    a, b = merge(tv, "dare", seed=1).theta, merge(tv, "dare", seed=1).theta
    assert torch.equal(a, b) and not torch.equal(a, merge(tv, "dare", seed=2).theta)
    kept = torch.stack(list(dare_keep_masks(4, 200_000, 0.7, 0))).double().mean()
    assert abs(float(kept) - 0.3) < 0.005  # each entry survives with probability 1 − p
    masks = list(dare_keep_masks(2, 50, 0.5, 9))
    assert not torch.equal(masks[0], masks[1])  # one stream: the tasks get different draws


@pytest.mark.parametrize("K", [1, 2, 4])
@pytest.mark.parametrize("tall_lambda, min_tasks", [(0.6, 2), (0.3, 1), (1.0, 3)])
def test_consensus_matches_reference(K, tall_lambda, min_tasks):
    pre, fts = models(K, seed=6)
    tv = TaskVectors.from_state_dicts(pre, fts)
    res = merge(tv, "consensus", tall_lambda=tall_lambda, min_tasks=min_tasks, lam=0.4)
    assert_state_close(tv.to_state_dict(res.theta), ref.consensus(pre, fts, tall_lambda, min_tasks, 0.4))


def test_consensus_edge_cases():
    pre, fts = models(3, seed=8)
    tv = TaskVectors.from_state_dicts(pre, fts)
    ta = merge(tv, "task_arithmetic").theta
    assert torch.equal(merge(tv, "consensus", min_tasks=0).theta, ta)  # k = 0 keeps everything
    one = TaskVectors.from_state_dicts(pre, fts[:1])  # k = 1: one task claims every weight it has
    assert torch.equal(merge(one, "consensus", min_tasks=1).theta, merge(one, "task_arithmetic").theta)
    assert not torch.equal(merge(tv, "consensus").theta, ta)


@pytest.mark.parametrize("K", [1, 2, 5])
def test_magmax_matches_reference(K):
    pre, fts = models(K, seed=9)
    tv = TaskVectors.from_state_dicts(pre, fts)
    assert_state_close(tv.to_state_dict(merge(tv, "magmax").theta), ref.magmax(pre, fts, 0.5))
    if K == 1:
        assert torch.equal(merge(tv, "magmax").theta, merge(tv, "task_arithmetic", lam=0.5).theta)


def test_magmax_keeps_signs_and_breaks_ties_by_task_order():
    pre = {"w": torch.zeros(4, dtype=torch.float64)}
    fts = [{"w": torch.tensor([1.0, -3.0, 2.0, -2.0], dtype=torch.float64)},
           {"w": torch.tensor([-2.0, 1.0, -2.0, 2.0], dtype=torch.float64)}]
    tv = TaskVectors.from_state_dicts(pre, fts)
    assert merge(tv, "magmax", lam=1.0).theta.tolist() == [-2.0, -3.0, -2.0, 2.0]  # ties: the later task


@pytest.mark.parametrize("K", [1, 2, 4])
@pytest.mark.parametrize("keep", [0.1, 0.3, 1.0])
def test_pcb_matches_reference(K, keep):
    pre, fts = models(K, seed=10, shapes={"w": (40, 30), "b": (40,), "v": (7, 3, 5)})
    tv = TaskVectors.from_state_dicts(pre, fts)
    res = merge(tv, "pcb", variant="released", density=keep, lam=1.2)
    assert_state_close(tv.to_state_dict(res.theta), ref.pcb(pre, fts, keep, 1.2))


def test_pcb_drops_all_but_the_kept_fraction_of_each_task():
    from tatr_core.merge.pcb import pcb_scores

    pre, fts = models(3, seed=12, shapes={"w": (50, 40)})
    tv = TaskVectors.from_state_dicts(pre, fts)
    for k in range(3):
        weight, _ = pcb_scores(tv.deltas, k, 0.2)
        assert int((weight > 0).sum()) <= int(0.2 * tv.N) and float(weight.max()) == 1.0


@pytest.mark.parametrize("K", [1, 2, 4])
def test_iso_c_matches_reference(K):
    pre, fts = models(K, seed=13)
    tv = TaskVectors.from_state_dicts(pre, fts)
    res = merge(tv, "iso_c", lam=1.3)
    assert_state_close(tv.to_state_dict(res.theta), ref.iso(pre, fts, 1.3, None), atol=1e-9)


@pytest.mark.parametrize("K, fraction", [(1, 0.8), (2, 0.5), (3, 0.2), (4, 0.8)])
def test_iso_cts_matches_reference(K, fraction):
    pre, fts = models(K, seed=14, shapes={"w": (14, 12), "u": (9, 16), "b": (14,)})
    tv = TaskVectors.from_state_dicts(pre, fts)
    res = merge(tv, "iso_cts", common_fraction=fraction)
    assert_state_close(tv.to_state_dict(res.theta), ref.iso(pre, fts, 1.0, fraction), atol=1e-9)


@pytest.mark.parametrize("K, fraction", [(2, 0.5), (3, 0.2)])
def test_float32_iso_cts_is_as_close_to_the_float64_reference_as_the_float32_svd(K, fraction, monkeypatch):
    """float32 task vectors take the float64 Gram route for their top singular triplets (tatr_core/linalg.py)."""
    from tatr_core import linalg

    pre, fts = models(K, seed=15, shapes={"w": (14, 12), "u": (9, 16), "b": (14,)})
    expected = ref.iso(pre, fts, 1.0, fraction)
    f32 = lambda sd: {k: v.float() for k, v in sd.items()}  # noqa: E731
    tv = TaskVectors.from_state_dicts(f32(pre), [f32(f) for f in fts])

    def error() -> float:
        got = tv.to_state_dict(merge(tv, "iso_cts", common_fraction=fraction).theta)
        return max(float((got[k].double() - expected[k]).abs().max()) for k in expected)

    gram = error()
    monkeypatch.setattr(linalg, "gram_route", lambda a: False)
    assert gram <= 2 * error() + 1e-6


def test_iso_spectra_are_isotropic():
    from tatr_core.merge.iso import iso_c_matrix, iso_cts_matrix

    g = torch.Generator().manual_seed(1)
    mats = [torch.randn(12, 10, generator=g, dtype=torch.float64) for _ in range(3)]
    for merged in (iso_c_matrix(mats), iso_cts_matrix(mats, 0.5)):
        s = torch.linalg.svdvals(merged)
        assert float(s.max() - s.min()) < 1e-9 * float(s.max())


@pytest.mark.parametrize("method", NEW)
def test_the_plugin_keeps_theta_pre_outside_the_trust_region(method):
    pre, fts = models(3, seed=15)
    tv = TaskVectors.from_state_dicts(pre, fts)
    plain = merge(tv, method)
    res = merge(tv, method, tau=0.2, sensitivity="zero-shot")
    outside = ~res.trust_region.keep
    assert res.excluded == int(0.2 * tv.N) == int(outside.sum())
    assert torch.equal(res.theta[outside], tv.pretrained[outside])
    assert torch.equal(res.theta[~outside], plain.theta[~outside])


def test_the_docs_tables_are_the_generated_ones():
    """docs/methods.md's method table and docs/analyses.md's figure table, generated from the registries."""
    from pathlib import Path

    from tatr_core.figures.registry import markdown_table as figure_table
    from tatr_core.merge.registry import markdown_table

    docs = Path(__file__).resolve().parents[1] / "docs"
    methods = (docs / "methods.md").read_text()
    block = methods.split("<!-- method-table:start -->\n", 1)[1].split("<!-- method-table:end -->", 1)[0]
    assert block == markdown_table(REGISTRY.values()), "run: .venv/bin/python scripts/method_table.py --write"
    analyses = (docs / "analyses.md").read_text()
    block = analyses.split("<!-- figure-table:start -->\n", 1)[1].split("<!-- figure-table:end -->", 1)[0]
    assert block == figure_table(), "run: .venv/bin/python scripts/method_table.py --write"


def test_cli_flags_come_from_the_declarations():
    from tatr_core.cli import build_parser
    from tatr_core.cli.common import seed_value

    merge_parser = build_parser()._subparsers._group_actions[0].choices["merge"]
    flags = {a.dest: a for a in merge_parser._actions}
    for name in NEW:
        for p in REGISTRY[name].parameters:
            kind = seed_value if p.name == "seed" else p.kind  # the run's seed: one flag, 32-bit
            assert p.name in flags and flags[p.name].type is kind, (name, p.name)
    assert flags["base"].choices == ["task_arithmetic", "ties"]
