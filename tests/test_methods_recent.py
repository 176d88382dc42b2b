"""The methods recent CLIP-merging papers compare against (WUDI, EMR, Model Stock, CART, TSV-C, RegMean++)
and the LiNeS plug-in, each against its slow float64 reference in ``tests/reference.py``, with edge cases;
and the corrections that follow the authors' code (PCB's vision variant, Consensus with k > K, MagMax's ties)."""
from __future__ import annotations

import pytest
import torch

import reference as ref
from tatr_core.errors import TatrError
from tatr_core.merge import PLUGINS, REGISTRY, merge, resolve_params
from tatr_core.vectors import TaskVectors
from test_baselines import models
from test_merge_math import assert_state_close

RECENT = ["wudi", "emr", "model_stock", "cart", "tsv_c", "regmean++"]
SHAPES = {"transformer.resblocks.0.attn.w": (12, 10), "transformer.resblocks.0.b": (12,),
          "transformer.resblocks.1.mlp.w": (10, 16), "transformer.resblocks.1.b": (10,), "proj": (8, 6),
          "conv1.weight": (4, 3, 2, 2)}


def tv_of(pre, fts):
    return TaskVectors.from_state_dicts(pre, fts)


def test_recent_methods_are_registered_with_sourced_defaults_and_the_plugin():
    for name in RECENT:
        spec = REGISTRY[name]
        assert spec.plugin and spec.reference, name
        assert all(p.source for p in spec.parameters if p.name != "seed"), name
        assert spec.module.startswith("tatr_core.merge."), name
    assert REGISTRY["emr"].task_aware and REGISTRY["tsv_c"].task_aware and REGISTRY["regmean++"].uses_data
    assert list(PLUGINS) == ["tatr", "lines"]  # the mask, then LiNeS' scaling
    assert all(p.source for plugin in PLUGINS.values() for p in plugin.parameters)


@pytest.mark.parametrize("K", [1, 2, 4])
def test_model_stock_matches_reference(K):
    pre, fts = models(K, seed=21, shapes=SHAPES)
    tv = tv_of(pre, fts)
    assert_state_close(tv.to_state_dict(merge(tv, "model_stock").theta), ref.model_stock(pre, fts))


def test_model_stock_keeps_theta_pre_where_no_task_moved():
    pre, fts = models(3, seed=22, shapes={"w": (5, 4), "b": (5,)})
    for ft in fts:
        ft["b"] = pre["b"].clone()
    tv = tv_of(pre, fts)
    assert torch.equal(tv.to_state_dict(merge(tv, "model_stock").theta)["b"], pre["b"])


@pytest.mark.parametrize("K", [1, 2, 4])
@pytest.mark.parametrize("rank_ratio, cart_lambda", [(0.1, 1.0), (0.5, 0.7)])
def test_cart_matches_reference(K, rank_ratio, cart_lambda):
    pre, fts = models(K, seed=23, shapes=SHAPES)
    tv = tv_of(pre, fts)
    got = merge(tv, "cart", rank_ratio=rank_ratio, cart_lambda=cart_lambda).theta
    assert_state_close(tv.to_state_dict(got), ref.cart(pre, fts, rank_ratio, cart_lambda), atol=1e-9)


def test_cart_with_full_rank_is_the_fine_tuned_sum_around_the_average():
    """Full rank keeps every centred vector whole: θ̄ + Σ_k (θ_k − θ̄) = θ̄ for every matrix (the centred
    vectors sum to zero), so CART at full rank is weight averaging."""
    pre, fts = models(3, seed=24, shapes={"w": (6, 5), "b": (6,)})
    tv = tv_of(pre, fts)
    torch.testing.assert_close(merge(tv, "cart", rank_ratio=1.0).theta, merge(tv, "average").theta)


@pytest.mark.parametrize("K", [1, 2, 4])
def test_wudi_matches_the_released_loop(K):
    pre, fts = models(K, seed=25, shapes=SHAPES)
    tv = tv_of(pre, fts)
    got = merge(tv, "wudi", steps=25, lr=1e-2).theta  # a large step so the 25 steps move far from the sum
    expected = ref.wudi(pre, fts, 25, 1e-2)
    assert_state_close(tv.to_state_dict(got), expected, atol=1e-9)
    if K > 1:  # (one task: its vector is the loss's minimum already, and nothing moves)
        assert not torch.allclose(got, merge(tv, "wudi", steps=1, lr=1e-12).theta)


def test_wudi_lowers_the_interference_it_minimises():
    from tatr_core.merge.wudi import wudi_matrix

    g = torch.Generator().manual_seed(26)
    tasks = torch.randn(3, 10, 8, generator=g, dtype=torch.float64)

    def loss(m):
        return sum(float(((m - t) @ t.T).pow(2).sum() / t.pow(2).sum()) for t in tasks)

    assert loss(wudi_matrix(tasks, 200, 1e-2)) < 0.5 * loss(tasks.sum(0))


@pytest.mark.parametrize("K", [1, 2, 4])
def test_emr_matches_reference_task_by_task(K):
    pre, fts = models(K, seed=27, shapes=SHAPES)
    tv = tv_of(pre, fts)
    res = merge(tv, "emr")
    shared, own = ref.emr(pre, fts)
    assert_state_close(tv.to_state_dict(res.theta), shared)
    for k, name in enumerate(tv.names):
        assert_state_close(tv.to_state_dict(res.theta_for(name)), own[k])
    assert res.theta_for("not merged") is res.theta  # a task outside the merge: the one model


@pytest.mark.parametrize("K", [1, 2, 4])
def test_tsv_c_matches_reference_and_states_its_size(K):
    pre, fts = models(K, seed=28, shapes=SHAPES)
    tv = tv_of(pre, fts)
    res = merge(tv, "tsv_c", rank_fraction=0.25)
    for k, name in enumerate(tv.names):
        assert_state_close(tv.to_state_dict(res.theta_for(name)), ref.tsv_c(pre, fts, 0.25)[k], atol=1e-9)
    kept = 0
    for shape in SHAPES.values():
        kept += max(1, int(0.25 * min(shape))) * (shape[0] + shape[1] + 1) if len(shape) == 2 else \
            torch.Size(shape).numel()
    assert res.extras["stored_fraction"] == pytest.approx(kept / tv.N)


def test_the_plugin_masks_a_task_aware_method_task_by_task():
    pre, fts = models(3, seed=29, shapes=SHAPES)
    tv = tv_of(pre, fts)
    plain, res = merge(tv, "emr"), merge(tv, "emr", tau=0.2, sensitivity="zero-shot")
    outside = ~res.trust_region.keep
    for name in tv.names:
        assert torch.equal(res.theta_for(name)[outside], tv.pretrained[outside])
        assert torch.equal(res.theta_for(name)[~outside], plain.theta_for(name)[~outside])


@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "consensus", "tsv"])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_lines_matches_reference(method, beta):
    pre, fts = models(4, seed=30, shapes=SHAPES)
    tv = tv_of(pre, fts)
    plain = tv.to_state_dict(merge(tv, method, lam=1.0).theta)  # the method's merged vector, unscaled
    got = merge(tv, method, lines_beta=beta)
    assert "lam" not in got.params and got.params["lines_beta"] == beta
    assert_state_close(tv.to_state_dict(got.theta), ref.lines(pre, plain, fts, beta), atol=1e-9)


def test_lines_composes_after_tatr_and_task_arithmetic_gets_alpha_one_over_k():
    pre, fts = models(4, seed=31, shapes=SHAPES)
    tv = tv_of(pre, fts)
    masked = tv.to_state_dict(merge(tv, "tatr", lam=1.0, tau=0.2, sensitivity="zero-shot").theta)
    got = merge(tv, "tatr", tau=0.2, sensitivity="zero-shot", lines_beta=0.4)
    assert_state_close(tv.to_state_dict(got.theta), ref.lines(pre, masked, fts, 0.4), atol=1e-9)
    flat = merge(tv, "task_arithmetic", lines_beta=0.0)  # β = 0: every layer by α = 1/K, weight averaging
    torch.testing.assert_close(flat.theta, merge(tv, "average").theta)
    with pytest.raises(TatrError, match="in place of λ"):
        merge(tv, "task_arithmetic", lam=0.3, lines_beta=0.5)
    with pytest.raises(TatrError, match="leave --lines-beta out"):
        resolve_params("emr", lines_beta=0.5)


# ------------------------------------------------------------------------------ as the authors' code does
def test_consensus_asking_more_tasks_than_merged_reduces_to_zero_shot():
    pre, fts = models(1, seed=32)
    tv = tv_of(pre, fts)
    assert torch.equal(merge(tv, "consensus").theta, tv.pretrained)  # k = 2 > K = 1: the TALL authors' θ_pre
    assert torch.equal(merge(tv, "consensus", min_tasks=1).theta, merge(tv, "task_arithmetic").theta)


def test_magmax_gives_equal_magnitudes_to_the_later_task():
    pre = {"w": torch.zeros(3, dtype=torch.float64)}
    fts = [{"w": torch.tensor([2.0, -1.0, 5.0], dtype=torch.float64)},
           {"w": torch.tensor([-2.0, 1.0, 4.0], dtype=torch.float64)}]
    tv = tv_of(pre, fts)
    assert merge(tv, "magmax", lam=1.0).theta.tolist() == [-2.0, 1.0, 5.0]


@pytest.mark.parametrize("K", [1, 2, 4])
@pytest.mark.parametrize("variant", ["vision", "released"])
def test_pcb_variants_match_their_references(K, variant):
    from tatr_core.merge.pcb import VARIANTS

    pre, fts = models(K, seed=33, shapes={"w": (40, 30), "b": (40,), "v": (7, 3, 5)})
    tv = tv_of(pre, fts)
    d = VARIANTS[variant]
    res = merge(tv, "pcb", variant=variant)
    assert res.params["density"] == d["density"] and res.params["lam"] == d["lam"]
    assert_state_close(tv.to_state_dict(res.theta), ref.pcb(pre, fts, d["density"], d["lam"], variant, d["outlier"]))


def test_the_pcb_variants_differ_as_much_as_their_code():
    pre, fts = models(4, seed=34, shapes={"w": (60, 50)})
    tv = tv_of(pre, fts)
    vision = merge(tv, "pcb", lam=1.0).theta - tv.pretrained
    released = merge(tv, "pcb", variant="released").theta - tv.pretrained
    assert float((vision - released).norm() / released.norm()) > 0.1


# ------------------------------------------------------------------------------ RegMean++
def regmean_pp_reference(zoo, exemplars: int, alpha: float) -> torch.Tensor:
    """RegMean++ by whole-model passes in float64: block l's input Grams come from a model whose blocks below
    l are the merged ones and whose block l is task k's (RegMean's own full-model Gram hooks)."""
    from tatr_core.gradients import exemplars_of
    from tatr_core.merge.regmean import layer_grams, regmean_linear
    from tatr_core.models import channel_stats

    tv = zoo.task_vectors
    encoder = zoo.make_encoder().double().eval()
    mean, std = channel_stats(zoo.mean, zoo.std, "cpu")
    mean, std = mean.double(), std.double()
    finetuned = [{k: (tv.pretrained[sl] + tv.deltas[i, sl]).view(s).double() for k, sl, s in tv.layout.items()}
                 for i in range(tv.K)]
    merged = {k: tv.pretrained[sl].view(s).double().clone() for k, sl, s in tv.layout.items()}
    for k in merged:
        if not k.startswith(("transformer.", "ln_post.")) and k != "proj":
            merged[k] = sum(ft[k] for ft in finetuned) / tv.K
    images = [exemplars_of(zoo, t, exemplars, 0, "cpu")[0] for t in zoo.task_names]
    n_blocks = len(encoder.transformer.resblocks)
    for n in range(n_blocks):
        prefix = f"transformer.resblocks.{n}."
        grams = []
        for i in range(tv.K):
            weights = {**merged, **{k: v for k, v in finetuned[i].items() if k.startswith(prefix)}}
            grams.append(layer_grams(encoder, weights, images[i], mean, std))
        for k in [k for k in merged if k.startswith(prefix)]:
            if k in grams[0]:
                merged[k] = regmean_linear([g[k] for g in grams], [ft[k] for ft in finetuned], alpha)
            else:
                merged[k] = sum(ft[k] for ft in finetuned) / tv.K
    return torch.cat([(merged[k] - tv.pretrained[sl].view(s).double()).reshape(-1) for k, sl, s in tv.layout.items()])


def test_regmean_plus_plus_matches_whole_model_passes(micro_zoo):
    from tatr_core.merge.regmean import regmean_pp_merged
    from tatr_core.runs import method_params

    params = method_params("regmean++", exemplars=12)
    tv = micro_zoo.task_vectors
    got = regmean_pp_merged(micro_zoo, tv, micro_zoo.task_names, params, lambda f, m: None, use_cache=False)
    expected = regmean_pp_reference(micro_zoo, 12, params["alpha"])
    scale = float(expected.abs().max())
    assert float((got.double() - expected).abs().max()) < 1e-4 * scale
    # ln_post and the projection keep θ_pre (as FusionBench's code leaves them); the blocks moved
    for key, sl, _ in tv.layout.items():
        if key.startswith("ln_post.") or key == "proj":
            assert float(got[sl].abs().max()) == 0.0, key
    assert float(got.abs().max()) > 0
