"""Every merge method, Ω variant and the trust region against the float64 references."""
from __future__ import annotations

import pytest
import torch

import reference as ref
from tatr_core.errors import TatrError
from tatr_core.merge.registry import Combined
from tatr_core.merge import REGISTRY, merge, resolve_params
from tatr_core import trust_region as trust_region_module
from tatr_core.trust_region import SENSITIVITIES, count_for_fraction, kth_smallest, selection_method, sensitivity, \
    top_k_mask, trust_region
from tatr_core.vectors import TaskVectors

SHAPES = {"w1": (6, 5), "b1": (6,), "w2": (4, 6), "conv": (2, 3, 2, 2), "emb": (3,)}

#: the task-vector methods (the data-using ones are tested in test_data_methods.py)
TV_METHODS = [m for m, spec in REGISTRY.items() if not spec.uses_data]


def random_models(K: int, seed: int = 0, zero: bool = False):
    g = torch.Generator().manual_seed(seed)
    pre = {k: torch.randn(s, generator=g, dtype=torch.float64) for k, s in SHAPES.items()}
    pre["steps"] = torch.tensor([7], dtype=torch.int64)  # an integer buffer: carried, never merged
    fts = []
    for _ in range(K):
        ft = {k: (v if zero else v + 0.1 * torch.randn(v.shape, generator=g, dtype=torch.float64)) if v.is_floating_point()
              else torch.tensor([99]) for k, v in pre.items()}
        fts.append(ft)
    return pre, fts


def float_keys(pre):
    return [k for k, v in pre.items() if v.is_floating_point()]


def grads_for(tv: TaskVectors, seed: int = 1, signed: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((tv.K, tv.N), generator=g, dtype=torch.float64)
    return x if signed else x.abs()


def assert_state_close(a: dict, b: dict, atol=1e-10):
    assert set(a) >= set(b)
    for k in b:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)


@pytest.mark.parametrize("K", [1, 2, 3, 5])
@pytest.mark.parametrize("variant", list(SENSITIVITIES))
def test_sensitivity_matches_pairwise_loop(K, variant):
    pre, fts = random_models(K)
    tv = TaskVectors.from_state_dicts(pre, fts)
    grads, signed = grads_for(tv), grads_for(tv, 2, signed=True)
    fast = sensitivity(tv.deltas, variant, grads=grads, signed_grads=signed)
    slow = ref.sensitivity(list(tv.deltas), variant, list(grads), list(signed))
    torch.testing.assert_close(fast, slow, atol=1e-12, rtol=1e-12)
    if K == 1:
        assert torch.count_nonzero(fast) == 0  # no other task, no conflict


def test_sensitivity_normalize_and_missing_grads():
    pre, fts = random_models(3)
    tv = TaskVectors.from_state_dicts(pre, fts)
    g = grads_for(tv)
    torch.testing.assert_close(sensitivity(tv.deltas, "gradient", grads=g, normalize=True),
                               sensitivity(tv.deltas, "gradient", grads=g) / 6)
    with pytest.raises(TatrError, match="needs per-task grads"):
        sensitivity(tv.deltas, "gradient")
    with pytest.raises(TatrError, match="signed grads"):
        sensitivity(tv.deltas, "positive", grads=g)
    with pytest.raises(TatrError, match="unknown sensitivity"):
        sensitivity(tv.deltas, "bogus")


@pytest.mark.parametrize("tau", [0.0, 0.01, 0.05, 0.1, 0.29, 0.5])
@pytest.mark.parametrize("variant", list(SENSITIVITIES))
def test_trust_region_excludes_exactly_the_top_tau(tau, variant):
    pre, fts = random_models(4, seed=3)
    tv = TaskVectors.from_state_dicts(pre, fts)
    omega = sensitivity(tv.deltas, variant, grads=grads_for(tv), signed_grads=grads_for(tv, signed=True))
    tr = trust_region(omega, tau, variant)
    expected = ref.excluded_set(omega, tau, SENSITIVITIES[variant].nonnegative)
    got = set() if tr.keep is None else set(torch.nonzero(~tr.keep).squeeze(1).tolist())
    assert got == expected
    if SENSITIVITIES[variant].nonnegative:
        assert tr.excluded == len(expected) == int(round(tau * tv.N, 6) // 1)  # random Ω: all positive
    else:  # the sign decides; random signed Ω: about half of it is ≤ 0
        assert tr.excluded == len(expected) and (tau == 0 or 0.3 * tv.N < tr.excluded < 0.7 * tv.N)


def test_ties_in_omega_are_broken_by_index_and_count_is_exact():
    omega = torch.tensor([1.0, 3.0, 3.0, 3.0, 0.5, 3.0, 2.0], dtype=torch.float64)
    mask = top_k_mask(omega, 3)
    assert mask.tolist() == [False, True, True, True, False, False, False]
    tr = trust_region(omega, 3 / 7 + 1e-9, "gradient")
    assert tr.excluded == 3 and (~tr.keep).nonzero().squeeze(1).tolist() == [1, 2, 3]
    all_equal = torch.full((10,), 2.0)
    assert top_k_mask(all_equal, 4).tolist() == [True] * 4 + [False] * 6


def test_zero_sensitivity_is_never_excluded():
    omega = torch.tensor([0.0, 0.0, 2.0, 0.0, 1.0])
    tr = trust_region(omega, 0.8, "zero-shot")  # ⌊0.8·5⌋ = 4 asked, only 2 dimensions conflict at all
    assert tr.excluded == 2 and tr.keep.tolist() == [True, True, False, True, False]
    signed = torch.tensor([-3.0, 1.0, 0.0, -5.0, 4.0])
    for tau in (0.01, 0.4, 0.99):  # signed variants keep what Ω promotes (Ω > 0), whatever τ > 0 is
        tr = trust_region(signed, tau, "positive")
        assert tr.keep.tolist() == [False, True, False, False, True] and tr.excluded == 3
    assert trust_region(signed, 0.0, "negative").keep is None
    assert trust_region(-signed, 0.2, "negative").keep.tolist() == [True, False, False, True, False]


def test_signed_variants_merge_the_components_appendix_c4_names():
    """positive merges exactly the dimensions where Σ_{i≠j} g_j ⊙ Δ_i > 0 (ascent), negative those where
    it is < 0 (descent); together (with the zero-product dimensions) they make up Task Arithmetic."""
    pre, fts = random_models(3, seed=23)
    tv = TaskVectors.from_state_dicts(pre, fts)
    g = grads_for(tv, signed=True)
    pos = merge(tv, "tatr", lam=1.0, tau=0.01, sensitivity="positive", signed_grads=g).theta - tv.pretrained
    neg = merge(tv, "tatr", lam=1.0, tau=0.01, sensitivity="negative", signed_grads=g).theta - tv.pretrained
    cross = sum(g[j] * tv.deltas[i] for j in range(3) for i in range(3) if i != j)
    total = tv.deltas.sum(0)
    assert torch.equal(pos != 0, (cross > 0) & (total != 0)) and torch.equal(neg != 0, (cross < 0) & (total != 0))
    assert torch.allclose(pos + neg, total)


@pytest.mark.parametrize("method", ["kthvalue", "topk"])
def test_top_k_mask_past_16m_elements_is_exact(method):
    n = (1 << 24) + 12345  # torch.quantile refuses inputs this large
    values = torch.rand(n, generator=torch.Generator().manual_seed(0))
    values[:1000] = 0.999999  # plenty of ties right at a high value
    k = count_for_fraction(0.01, n)
    mask = top_k_mask(values, k, method)
    assert int(mask.sum()) == k
    kth = torch.sort(values, descending=True).values[k - 1]
    assert bool((values[mask] >= kth).all()) and bool((values[~mask] <= kth).all())


def test_both_selection_methods_give_the_sorted_order_statistic():
    """kth_smallest by kthvalue (the CPU's) and by topk of the smaller side (CUDA's) against a full sort."""
    gen = torch.Generator().manual_seed(5)
    for n in (1, 2, 7, 100, 1001):
        values = torch.randint(0, max(2, n // 3), (n,), generator=gen).double()  # many ties
        values[::5] = torch.rand(len(values[::5]), generator=gen, dtype=torch.float64)
        reference = torch.sort(values).values
        for k in sorted(k for k in {1, 2, n // 2, n // 2 + 1, n - 1, n} if 1 <= k <= n):
            for method in ("kthvalue", "topk"):
                assert float(kth_smallest(values, k, method)) == float(reference[k - 1]), (n, k, method)
        for k in range(0, n + 1, max(1, n // 13)):  # exactly k entries, ties by lower index, both ways
            assert torch.equal(top_k_mask(values, k, "topk"), top_k_mask(values, k, "kthvalue"))
    with pytest.raises(ValueError, match="outside"):
        kth_smallest(torch.ones(3), 4)
    with pytest.raises(ValueError, match="unknown selection"):
        kth_smallest(torch.ones(3), 1, "sort")
    assert selection_method(torch.device("cpu")) == "kthvalue"
    assert selection_method(torch.device("cuda")) == "topk"  # kthvalue is one thread block per slice there


def test_merges_select_the_same_dimensions_with_cuda_selection(monkeypatch):
    """Every merge that selects (TATR's top-τ, TIES' trim, PCB's order statistics) gives the same model
    when the selection runs as it does on CUDA."""
    pre, fts = random_models(4, seed=31)
    tv = TaskVectors.from_state_dicts(pre, fts)
    g = grads_for(tv)
    runs = [("tatr", dict(tau=0.07, sensitivity="gradient", grads=g)), ("tatr", dict(tau=0.3, sensitivity="zero-shot")),
            ("ties", dict(density=0.2)), ("pcb", dict(density=0.1))]
    expected = [merge(tv, name, **kw).theta for name, kw in runs]
    monkeypatch.setattr(trust_region_module, "selection_method", lambda device: "topk")
    for (name, kw), theta in zip(runs, expected):
        assert torch.equal(merge(tv, name, **kw).theta, theta), name


@pytest.mark.parametrize("tau", [-0.1, 1.0, 1.5, float("nan"), "x"])
def test_bad_tau_is_refused(tau):
    with pytest.raises(TatrError, match="τ"):
        resolve_params("tatr", tau=tau)


@pytest.mark.parametrize("density", [0.0, -1, 1.01, float("nan"), "x"])
def test_bad_density_is_refused(density):
    with pytest.raises(TatrError, match="density"):
        resolve_params("ties", density=density)


@pytest.mark.parametrize("lam", [float("nan"), float("inf"), "x"])
def test_bad_lambda_is_refused(lam):
    with pytest.raises(TatrError, match="λ"):
        resolve_params("task_arithmetic", lam=lam)


def test_parameters_that_do_not_apply_are_refused():
    with pytest.raises(TatrError, match="does not apply"):
        resolve_params("average", lam=0.5)
    with pytest.raises(TatrError, match=r"'task_arithmetic' has no parameter 'density' \(its own parameters: λ\); "
                                        r"density applies to ties, dare, pcb, adamerging\+\+"):
        resolve_params("task_arithmetic", density=0.5)
    with pytest.raises(TatrError, match="unknown merge method"):
        resolve_params("magic")


def test_defaults():
    assert resolve_params("tatr") == {"lam": 0.3, "tau": 0.01, "sensitivity": "gradient"}
    assert resolve_params("tsv") == {"lam": 1.0, "tau": 0.0}
    assert resolve_params("ties") == {"lam": 0.3, "density": 0.2, "merge_func": "sum", "tau": 0.0}
    assert resolve_params("average") == {"tau": 0.0}


@pytest.mark.parametrize("K", [1, 3])
def test_task_arithmetic_and_average(K):
    pre, fts = random_models(K)
    tv = TaskVectors.from_state_dicts(pre, fts)
    ta = tv.to_state_dict(merge(tv, "task_arithmetic", lam=0.4).theta)
    assert_state_close(ta, ref.task_arithmetic(pre, fts, 0.4, keys=float_keys(pre)))
    assert torch.equal(ta["steps"], pre["steps"])  # integer buffer carried from θ_pre
    avg = tv.to_state_dict(merge(tv, "average").theta)
    assert_state_close(avg, ref.average({k: pre[k] for k in float_keys(pre)}, fts))


@pytest.mark.parametrize("variant", list(SENSITIVITIES))
def test_tatr_matches_reference(variant):
    pre, fts = random_models(4, seed=5)
    tv = TaskVectors.from_state_dicts(pre, fts)
    grads, signed = grads_for(tv), grads_for(tv, signed=True)
    res = merge(tv, "tatr", lam=0.3, tau=0.1, sensitivity=variant, grads=grads, signed_grads=signed)
    omega = ref.sensitivity(list(tv.deltas), variant, list(grads), list(signed))
    keep = torch.ones(tv.N, dtype=torch.float64)
    keep[list(ref.excluded_set(omega, 0.1, SENSITIVITIES[variant].nonnegative))] = 0
    expected = ref.task_arithmetic(pre, fts, 0.3, keep=keep, keys=float_keys(pre))
    assert_state_close(tv.to_state_dict(res.theta), expected)
    assert res.excluded == (int(tv.N * 0.1) if SENSITIVITIES[variant].nonnegative else int((omega <= 0).sum()))


@pytest.mark.parametrize("method", TV_METHODS)
def test_tau_zero_is_bit_for_bit_the_plain_method(method):
    pre, fts = random_models(3, seed=7)
    tv = TaskVectors.from_state_dicts(pre, fts)
    spec = REGISTRY[method]
    params = resolve_params(method, tau=0.0)
    combined = spec.combine(tv, params)
    merged = combined.merged if isinstance(combined, Combined) else combined
    plain = tv.pretrained + merged if spec.default_lam is None else tv.pretrained + params["lam"] * merged
    res = merge(tv, method, tau=0.0, sensitivity="zero-shot")
    assert torch.equal(res.theta, plain) and res.trust_region is None and res.excluded == 0
    if isinstance(combined, Combined):  # a task-aware method: every task's own model too
        for k, name in enumerate(tv.names):
            assert torch.equal(res.theta_for(name), tv.pretrained + combined.task_vector(k))
    if method == "tatr":
        assert torch.equal(res.theta, merge(tv, "task_arithmetic").theta)


@pytest.mark.parametrize("K", [1, 2, 4])
def test_tatr_with_one_task_or_any_K_at_tau0(K):
    pre, fts = random_models(K, seed=11)
    tv = TaskVectors.from_state_dicts(pre, fts)
    res = merge(tv, "tatr", tau=0.05, sensitivity="zero-shot")
    if K == 1:  # Ω ≡ 0: nothing conflicts, TATR is Task Arithmetic
        assert res.excluded == 0 and torch.equal(res.theta, merge(tv, "task_arithmetic").theta)
    else:
        assert res.excluded == int(0.05 * tv.N)


@pytest.mark.parametrize("merge_func", ["sum", "mean"])
@pytest.mark.parametrize("K,density", [(1, 0.3), (3, 0.2), (4, 0.5), (3, 1.0)])
def test_ties_matches_reference(K, density, merge_func):
    pre, fts = random_models(K, seed=13)
    keys = float_keys(pre)
    tv = TaskVectors.from_state_dicts(pre, fts)
    got = tv.to_state_dict(merge(tv, "ties", lam=0.7, density=density, merge_func=merge_func).theta)
    expected = ref.ties({k: pre[k] for k in keys}, [{k: f[k] for k in keys} for f in fts], density, 0.7, merge_func)
    assert_state_close(got, expected)


def test_ties_sums_by_default_as_the_papers_ties_rows_do():
    """The TATR paper's (and FusionBench's) TIES: density 0.2, the agreeing entries summed, λ 0.3.
    With density 1 and every task vector positive, the sum is Task Arithmetic and the mean is the average."""
    assert resolve_params("ties") == {"lam": 0.3, "density": 0.2, "merge_func": "sum", "tau": 0.0}
    pre, fts = random_models(3, seed=19)
    fts = [{k: pre[k] + (v - pre[k]).abs() if v.is_floating_point() else v for k, v in ft.items()} for ft in fts]
    tv = TaskVectors.from_state_dicts(pre, fts)
    ta = merge(tv, "task_arithmetic", lam=0.3).theta
    assert torch.allclose(merge(tv, "ties", lam=0.3, density=1.0).theta, ta)
    assert torch.allclose(merge(tv, "ties", lam=0.9, density=1.0, merge_func="mean").theta, ta)
    with pytest.raises(TatrError, match="merge_func of 'ties' must be one of sum, mean"):
        merge(tv, "ties", merge_func="max")


def test_ties_plugin_masks_after_trim_elect_merge():
    pre, fts = random_models(3, seed=17)
    tv = TaskVectors.from_state_dicts(pre, fts)
    plain = merge(tv, "ties", lam=1.0)
    plugged = merge(tv, "ties", lam=1.0, tau=0.2, sensitivity="zero-shot")
    keep = plugged.trust_region.keep
    torch.testing.assert_close(plugged.theta, torch.where(keep, plain.theta, tv.pretrained), atol=0, rtol=0)


@pytest.mark.parametrize("K", [1, 2, 3])
def test_tsv_matches_reference(K):
    pre, fts = random_models(K, seed=19)
    keys = float_keys(pre)
    tv = TaskVectors.from_state_dicts(pre, fts)
    got = tv.to_state_dict(merge(tv, "tsv", lam=1.0).theta)
    expected = ref.tsv({k: pre[k] for k in keys}, [{k: f[k] for k in keys} for f in fts], 1.0)
    assert_state_close(got, expected, atol=1e-9)
    if K == 1:  # one task keeps all its singular triplets: the task vector itself
        assert_state_close(got, {k: fts[0][k] for k in keys}, atol=1e-9)


def _structured(m: int, n: int, rank: int | None, seed: int) -> torch.Tensor:
    """A task-vector-like float64 matrix: a few strong directions plus small dense noise (``rank`` set: exactly that rank)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(m, 3, generator=g, dtype=torch.float64) @ torch.randn(3, n, generator=g, dtype=torch.float64)
    if rank is not None:
        return torch.randn(m, rank, generator=g, dtype=torch.float64) @ torch.randn(rank, n, generator=g, dtype=torch.float64)
    return low + 0.05 * torch.randn(m, n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("shape", [(40, 12), (12, 40), (16, 16)])
def test_float32_singular_triplets_through_the_gram_matrix(shape, monkeypatch):
    """float32 matrices take the float64 Gram route (no SVD at all) and get the float64 SVD's top
    triplets to float32 precision; rank-deficient ones fall back to the SVD."""
    from tatr_core import linalg

    d64 = _structured(*shape, None, seed=3)
    u64, s64, vh64 = torch.linalg.svd(d64, full_matrices=False)
    svd = torch.linalg.svd
    calls = []
    monkeypatch.setattr(torch.linalg, "svd", lambda *a, **k: calls.append(1) or svd(*a, **k))
    p = min(shape) // 3
    u, s, v = linalg.top_singular(d64.float(), p)
    polar = linalg.nearest_orthogonal(d64.float())
    assert not calls  # the Gram route
    assert u.dtype == s.dtype == v.dtype == torch.float32 and u.shape == (shape[0], p) and v.shape == (shape[1], p)
    torch.testing.assert_close(s.double(), s64[:p], rtol=1e-5, atol=0)
    for i in range(p):  # each triplet, sign-free: σ u vᵀ
        torch.testing.assert_close(s[i].double() * torch.outer(u[:, i].double(), v[:, i].double()),
                                   s64[i] * torch.outer(u64[:, i], vh64[i]), rtol=0, atol=1e-5 * float(s64[0]))
    torch.testing.assert_close(u.double().T @ u.double(), torch.eye(p, dtype=torch.float64), rtol=0, atol=1e-5)
    torch.testing.assert_close(polar.double(), u64 @ vh64, rtol=0, atol=1e-5)
    # rank-deficient: d v / σ is undefined past the rank, so the SVD answers
    low = _structured(*shape, 2, seed=4).float()
    u, s, v = linalg.top_singular(low, 4)
    assert calls and torch.equal(s, svd(low, full_matrices=False)[1][:4])
    calls.clear()
    torch.testing.assert_close(linalg.nearest_orthogonal(low), (lambda r: r[0] @ r[2])(svd(low, full_matrices=False)))
    assert calls  # the polar factor of a rank-deficient matrix: the SVD's
    calls.clear()
    linalg.top_singular(d64, p), linalg.nearest_orthogonal(d64)
    assert len(calls) == 2  # float64 input: always the SVD (the Gram route would lose half its digits)


@pytest.mark.parametrize("K", [1, 2, 3])
def test_float32_tsv_is_as_close_to_the_float64_reference_as_the_float32_svd(K, monkeypatch):
    from tatr_core import linalg

    pre, fts = random_models(K, seed=29)
    keys = float_keys(pre)
    expected = ref.tsv({k: pre[k] for k in keys}, [{k: f[k] for k in keys} for f in fts], 1.0)
    f32 = lambda sd: {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}  # noqa: E731
    tv = TaskVectors.from_state_dicts(f32(pre), [f32(f) for f in fts])

    def error() -> float:
        got = tv.to_state_dict(merge(tv, "tsv", lam=1.0).theta)
        return max(float((got[k].double() - expected[k]).abs().max()) for k in keys)

    gram = error()
    monkeypatch.setattr(linalg, "gram_route", lambda a: False)
    svd = error()
    assert gram <= 2 * svd + 1e-6, (gram, svd)


def test_tsv_tensors_with_too_few_singular_values_get_no_update():
    pre, fts = random_models(5, seed=23)  # w2 is 4×6: r = 4 < K = 5
    tv = TaskVectors.from_state_dicts(pre, fts)
    got = tv.to_state_dict(merge(tv, "tsv").theta)
    assert torch.equal(got["w2"], pre["w2"])


@pytest.mark.parametrize("method", TV_METHODS)
def test_all_zero_task_vectors_give_the_pretrained_model(method):
    pre, fts = random_models(3, zero=True)
    tv = TaskVectors.from_state_dicts(pre, fts)
    res = merge(tv, method, tau=0.1, sensitivity="zero-shot")
    assert torch.equal(res.theta, tv.pretrained)
    assert res.excluded == 0  # Ω ≡ 0: no conflict anywhere


def test_merge_keeps_inputs_untouched():
    pre, fts = random_models(3)
    tv = TaskVectors.from_state_dicts(pre, fts)
    before = tv.deltas.clone(), tv.pretrained.clone()
    for method in TV_METHODS:
        merge(tv, method, tau=0.1, sensitivity="zero-shot")
    assert torch.equal(before[0], tv.deltas) and torch.equal(before[1], tv.pretrained)


def test_sensitivity_and_masks_are_made_where_the_data_lives():
    """Ω and the masks are allocated on the task vectors' device (the "meta" device stands in for a GPU:
    a tensor made on the CPU by mistake would show up as a CPU tensor here)."""
    deltas = torch.empty((3, 64), device="meta")
    for variant in ("zero-shot", "gradient", "positive"):
        aux = torch.empty((3, 64), device="meta")
        assert sensitivity(deltas, variant, grads=aux, signed_grads=aux).device.type == "meta"
    values = torch.empty(10, device="meta")
    assert top_k_mask(values, 0).device.type == "meta" and top_k_mask(values, 10).device.type == "meta"
