"""The spectral route (tatr_core/linalg.py) against float64 SVDs: TSV-M, Iso-CTS, TSV-C and the view's
spectra for float32 task vectors stay within 1e-4 (relative) of the same merges computed with float64
SVDs, for K = 2, 8 and 20, on tall, wide and square matrices, rank-deficient ones included; both of
its eigensolvers (all eigenpairs, and only the top ones) are exercised."""
from __future__ import annotations

import pytest
import torch

import reference as ref
from tatr_core import linalg
from tatr_core.merge import merge
from tatr_core.vectors import TaskVectors

SHAPES = {"tall": (120, 60), "wide": (60, 120), "square": (80, 80)}


def task_matrix(shape, generator, rank: int | None = None) -> torch.Tensor:
    """A task-matrix-like float64 update: a rank-8 part plus a noise floor (``rank``: exactly that rank)."""
    m, n = shape
    if rank is not None:
        return 1e-2 * torch.randn(m, rank, generator=generator, dtype=torch.float64) @ \
            torch.randn(rank, n, generator=generator, dtype=torch.float64) / rank
    low = torch.randn(m, 8, generator=generator, dtype=torch.float64) @ torch.randn(8, n, generator=generator,
                                                                                    dtype=torch.float64)
    return 2e-3 * low / 8 + 1e-4 * torch.randn(m, n, generator=generator, dtype=torch.float64)


def zoo(shape, K: int, rank: int | None = None, seed: int = 0) -> tuple[dict, list[dict]]:
    g = torch.Generator().manual_seed(seed)
    pre = {"w": torch.randn(*shape, generator=g, dtype=torch.float64).float().double(),
           "b": torch.randn(shape[0], generator=g, dtype=torch.float64).float().double()}
    fts = [{"w": (pre["w"] + task_matrix(shape, g, rank)).float().double(),
            "b": (pre["b"] + 1e-3 * torch.randn(shape[0], generator=g, dtype=torch.float64)).float().double()}
           for _ in range(K)]
    return pre, fts  # float32 values, held in float64 for the references


def relative(got: dict, want: dict, pre: dict) -> float:
    """‖Δ_got − Δ_want‖ / ‖Δ_want‖ over the merged update of the matrix."""
    d_want = want["w"] - pre["w"]
    return float((got["w"].double() - want["w"]).norm() / d_want.norm())


def f32(pre, fts) -> TaskVectors:
    return TaskVectors.from_state_dicts({k: v.float() for k, v in pre.items()},
                                        [{k: v.float() for k, v in f.items()} for f in fts])


CASES = [(name, K, None) for name in SHAPES for K in (2, 8, 20)]
# rank-deficient matrices whose rank is at least the triplets TSV-M keeps per task (⌊r/K⌋): past the rank
# the singular vectors are any basis of the null space, which no two solvers choose alike (tsv.py's docstring)
CASES += [("tall", 2, 40), ("wide", 8, 12), ("square", 20, 5)]


@pytest.mark.parametrize("shape,K,rank", CASES)
def test_tsv_m_is_within_1e4_of_float64_svds(shape, K, rank):
    pre, fts = zoo(SHAPES[shape], K, rank, seed=K)
    want = ref.tsv(pre, fts, 1.0)  # float64 SVDs, zero-padded blocks, as the authors describe it
    got = f32(pre, fts)
    assert relative(got.to_state_dict(merge(got, "tsv", lam=1.0).theta), want, pre) < 1e-4


@pytest.mark.parametrize("shape,K,rank", CASES)
def test_iso_cts_is_within_1e4_of_float64_svds(shape, K, rank):
    pre, fts = zoo(SHAPES[shape], K, rank, seed=100 + K)
    want = ref.iso(pre, fts, 1.0, 0.8)
    got = f32(pre, fts)
    assert relative(got.to_state_dict(merge(got, "iso_cts", lam=1.0).theta), want, pre) < 1e-4


@pytest.mark.parametrize("shape", list(SHAPES))
def test_tsv_c_and_the_view_spectra_are_within_1e4_of_float64_svds(shape):
    pre, fts = zoo(SHAPES[shape], 8, seed=7)
    tv = f32(pre, fts)
    res = merge(tv, "tsv_c")
    for k, want in enumerate(ref.tsv_c(pre, fts, 0.05)):
        assert relative(tv.to_state_dict(res.theta_for(tv.names[k])), want, pre) < 1e-4
    for k in range(tv.K):
        sl = next(sl for key, sl, _ in tv.layout.items() if key == "w")
        d = tv.deltas[k, sl].view(SHAPES[shape])
        u, spectrum, v = linalg.singular_spectrum(d, 6)
        s64 = torch.linalg.svdvals(d.double())
        assert float((spectrum - s64).abs().max() / s64[0]) < 1e-6


@pytest.mark.parametrize("p", [3, 40])
def test_both_eigensolvers_give_the_svd_triplets(p, monkeypatch):
    """The top p triplets: only those (p ≤ 20% of 60, LAPACK syevr) or from every eigenpair."""
    calls = []
    subset = linalg.eigen
    monkeypatch.setattr(linalg, "eigen", lambda g, q, full: calls.append((q, full)) or subset(g, q, full))
    d = task_matrix((120, 60), torch.Generator().manual_seed(3)).float()
    u, s, v = linalg.top_singular(d, p)
    u64, s64, vh64 = torch.linalg.svd(d.double(), full_matrices=False)
    assert calls == [(p, False)]
    assert float((s.double() - s64[:p]).abs().max() / s64[0]) < 1e-6
    recon = (u.double() * s.double()) @ v.double().T
    want = (u64[:, :p] * s64[:p]) @ vh64[:p]
    assert float((recon - want).norm() / want.norm()) < 1e-4
