"""Data-using methods (AdaMerging TW/LW/++, Surgery, Fisher, RegMean) and their TATR plug-in,
against float64 references and direct computations on the micro zoo."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tatr_core.errors import TatrError
from tatr_core.merge import REGISTRY, resolve_params
from tatr_core.merge.adamerging import entropy, learn_coefficients, merged_theta
from tatr_core.merge.fisher import diagonal_fisher, fisher_merge
from tatr_core.merge.regmean import _context, regmean_linear
from tatr_core.runs import evaluate_method, merge_inputs, merge_tasks, method_params
from clirun import run_cli

DATA_METHODS = ["fisher", "regmean", "adamerging", "adamerging++", "surgery"]
FAST = {"adamerging": {"steps": 10}, "adamerging++": {"steps": 10}, "surgery": {"steps": 30},
        "fisher": {"exemplars": 8}, "regmean": {"exemplars": 8}}


# ------------------------------------------------------------------------------ math against references
def test_entropy_matches_the_definition():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, generator=g, dtype=torch.float64) * 3
    p = torch.softmax(logits, -1)
    direct = sum(-sum(float(p[i, c]) * float(torch.log(p[i, c])) for c in range(7)) for i in range(5)) / 5
    assert float(entropy(logits)) == pytest.approx(direct, rel=1e-12)
    assert float(entropy(torch.zeros(1, 4, dtype=torch.float64))) == pytest.approx(torch.log(torch.tensor(4.0)).item())


def test_merged_theta_expands_task_and_layer_coefficients(micro_zoo):
    tv = micro_zoo.task_vectors
    pre, deltas = tv.pretrained.double(), tv.deltas.double()
    K, L = deltas.shape[0], len(tv.layout)
    coef = torch.rand(K, L, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = merged_theta(pre, deltas, coef, tv.layout)
    for l, (_, sl, _) in enumerate(tv.layout.items()):  # a loop over tasks and tensors
        want = pre[sl].clone()
        for k in range(K):
            want += coef[k, l] * deltas[k, sl]
        assert torch.allclose(got[sl], want, rtol=1e-12, atol=1e-12)
    task_wise = merged_theta(pre, deltas, torch.full((K, 1), 0.3, dtype=torch.float64), tv.layout)
    assert torch.allclose(task_wise, pre + 0.3 * deltas.sum(0), atol=1e-12)  # = Task Arithmetic at λ = 0.3


def test_regmean_on_one_linear_layer_is_the_least_squares_solution():
    g = torch.Generator().manual_seed(2)
    d_in, d_out = 6, 4
    xs = [torch.randn(n, d_in, generator=g, dtype=torch.float64) for n in (9, 12, 7)]
    ws = [torch.randn(d_out, d_in, generator=g, dtype=torch.float64) for _ in xs]
    grams = [x.T @ x for x in xs]
    merged = regmean_linear(grams, ws, alpha=1.0)
    # min_W Σ_k ‖X_k Wᵀ − X_k W_kᵀ‖²: one stacked least-squares problem
    lstsq = torch.linalg.lstsq(torch.cat(xs), torch.cat([x @ w.T for x, w in zip(xs, ws)])).solution.T
    assert torch.allclose(merged, lstsq, atol=1e-10)
    # α < 1: the off-diagonals of every Gram are scaled, written out with an explicit inverse
    alpha = 0.9
    scaled = [alpha * gr + (1 - alpha) * torch.diag(torch.diag(gr)) for gr in grams]
    want = sum(w @ s for w, s in zip(ws, scaled)) @ torch.inverse(sum(scaled))
    assert torch.allclose(regmean_linear(grams, ws, alpha), want, atol=1e-10)
    assert torch.allclose(regmean_linear(grams[:1], ws[:1], alpha), ws[0], atol=1e-10)  # one model: itself


def test_fisher_merge_with_equal_fishers_is_averaging():
    g = torch.Generator().manual_seed(3)
    deltas = torch.randn(4, 50, generator=g, dtype=torch.float64)
    fisher = torch.rand(50, generator=g, dtype=torch.float64).expand(4, 50)
    assert torch.allclose(fisher_merge(deltas, fisher), deltas.mean(0), atol=1e-12)
    weights = torch.rand(4, 50, generator=g, dtype=torch.float64)
    want = torch.stack([sum(weights[k, n] * deltas[k, n] for k in range(4)) / sum(weights[k, n] for k in range(4))
                        for n in range(50)])
    assert torch.allclose(fisher_merge(deltas, weights), want, atol=1e-12)
    zero = torch.zeros(4, 50, dtype=torch.float64)
    assert torch.allclose(fisher_merge(deltas, zero), deltas.mean(0))  # no Fisher mass anywhere: the average


def test_diagonal_fisher_matches_a_per_sample_per_class_loop(micro_zoo):
    from tatr_core.models import channel_stats, head_logits, normalise

    z, task = micro_zoo, micro_zoo.task_names[0]
    encoder = z.make_encoder().double().eval()
    keys = ["proj", "transformer.resblocks.0.mlp.c_fc.weight", "conv1.weight"]
    weights = {k: v.double() for k, v in z.finetuned[task].items() if v.is_floating_point()}
    head = z.tasks[task].head.double()
    mean, std = (t.double() for t in channel_stats(z.mean, z.std))
    images = z.tasks[task].split("train")[0][:3]
    got = diagonal_fisher(encoder, weights, head, images, mean, std, chunk=5)  # chunks split images' classes
    want = {k: torch.zeros_like(weights[k]) for k in keys}
    for x in normalise(images, mean, std):
        for c in range(head.shape[0]):
            p = {k: v.clone().requires_grad_(k in keys) for k, v in weights.items()}
            logp = F.log_softmax(head_logits(torch.func.functional_call(encoder, p, (x[None],)), head), -1)[0]
            grads = torch.autograd.grad(logp[c], [p[k] for k in keys])
            for k, gk in zip(keys, grads):
                want[k] += logp[c].exp().detach() * gk ** 2
    for k in keys:
        assert torch.allclose(got[k], want[k] / 3, rtol=1e-6, atol=1e-14), k
    # many classes: labels sampled from p(y|x); unbiased, so close to the exact value with many samples
    sampled = diagonal_fisher(encoder, weights, head, images, mean, std, max_classes=1, samples=400, chunk=64)
    for k in keys:
        rel = float((sampled[k] - want[k] / 3).norm() / (want[k] / 3).norm())
        assert rel < 0.25, (k, rel)


def test_attention_context_reproduces_the_attention_output(micro_zoo):
    encoder = micro_zoo.make_encoder().double().eval()
    attn = encoder.transformer.resblocks[0].attn
    q = torch.randn(2, 5, attn.embed_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    want = attn(q, q, q, need_weights=False)[0]
    assert torch.allclose(attn.out_proj(_context(attn, q)), want, atol=1e-10)


# ------------------------------------------------------------------------------ methods on the micro zoo
def test_adamerging_lowers_the_entropy_and_keeps_coefficients_in_range(micro_zoo):
    z = micro_zoo
    tv = z.task_vectors
    for granularity in ("task", "layer"):
        params = {"granularity": granularity, "init": 0.3, "lr": 0.05, "steps": 40, "batch": 32, "seed": 0}
        learned = learn_coefficients(z, tv, tv.deltas, z.task_names, params, lambda f, m: None)
        coef = torch.tensor(learned["coefficients"])
        assert coef.shape == (tv.K, 1 if granularity == "task" else len(tv.layout))
        assert (coef - 0.3).abs().max() > 0.05  # the coefficients moved
        assert coef.min() >= 0 and coef.max() <= 1
        ent = learned["entropy"]
        assert sum(ent[-5:]) / 5 < sum(ent[:5]) / 5  # the objective went down
    # a large step pushes coefficients past the bounds: the raw parameters leave [0, 1] (the clamp is in
    # the forward pass, as in the reference, not applied to the parameters), the result is clamped
    params = {"granularity": "layer", "init": 0.3, "lr": 5.0, "steps": 3, "batch": 8, "seed": 0}
    learned = learn_coefficients(z, tv, tv.deltas, z.task_names, params, lambda f, m: None)
    coef, raw = torch.tensor(learned["coefficients"]), torch.tensor(learned["raw_coefficients"])
    assert coef.min() >= 0 and coef.max() <= 1 and ((coef == 0) | (coef == 1)).any()
    assert ((raw < 0) | (raw > 1)).any() and torch.equal(coef, raw.clamp(0, 1))


def test_adamerging_draws_two_batches_per_task_per_step_and_sums_their_entropies(micro_zoo, monkeypatch):
    """The reference's loader loop breaks after its second batch: per step and task, two seeded draws of
    ``batch`` images, their mean entropies summed; the forward pass sees the clamped coefficients."""
    import tatr_core.merge.adamerging as ada
    from tatr_core.models import channel_stats, head_logits
    from torch.func import functional_call

    z, tv = micro_zoo, micro_zoo.task_vectors
    draws, forwards = [], []
    real_batch, real_merged = ada.unlabelled_batch, ada.merged_theta
    monkeypatch.setattr(ada, "unlabelled_batch", lambda *a: draws.append(a[1]) or real_batch(*a))
    monkeypatch.setattr(ada, "merged_theta", lambda pre, d, c, layout: forwards.append(c.detach().clone())
                        or real_merged(pre, d, c, layout))
    params = {"granularity": "task", "init": 1.0, "lr": 0.5, "steps": 2, "batch": 4, "seed": 3}
    learned = ada.learn_coefficients(z, tv, tv.deltas, z.task_names, params, lambda f, m: None)
    assert draws == [4] * (2 * tv.K * 2)  # default batches = 2, for every task, on each of the 2 steps
    assert all(c.min() >= 0 and c.max() <= 1 for c in forwards)
    # the first step's objective, recomputed from the same seeded draws with two separate forward passes
    generator = torch.Generator().manual_seed(3)
    mean, std = channel_stats(z.mean, z.std, torch.device("cpu"))
    encoder = z.make_encoder().eval()
    weights = tv.layout.unflatten(real_merged(tv.pretrained.float(), tv.deltas.float(),
                                              torch.ones(tv.K, 1), tv.layout))
    total = 0.0
    with torch.no_grad():
        for t in z.task_names:
            for _ in range(2):
                x = real_batch(z.tasks[t].split("test")[0], 4, generator, mean, std)
                total += float(ada.entropy(head_logits(functional_call(encoder, weights, (x,), strict=False),
                                                       z.tasks[t].head.float())))
    assert abs(learned["entropy"][0] - total / (2 * tv.K)) < 1e-4


def test_surgery_lowers_the_l1_gap_it_optimises(micro_zoo):
    from tatr_core.merge.surgery import representations

    record = evaluate_method(micro_zoo, "surgery", steps=60, lr=1e-2, use_cache=False)
    gaps = record["surgery"]
    for t in micro_zoo.task_names:
        assert gaps["l1_after"][t] < gaps["l1_before"][t]
        assert gaps["loss"][t][-1] < gaps["loss"][t][0]
    # evaluation passes each task's features through its module: recompute one task by hand
    params = method_params("surgery", steps=60, lr=1e-2)
    res = merge_tasks(micro_zoo, "surgery", params, {})
    t = micro_zoo.task_names[0]
    images, labels = micro_zoo.tasks[t].split("test")
    module = res.extras["feature_maps"][t].to("cpu")  # trained wherever torch puts it (CUDA when present)
    z = module(representations(micro_zoo, res.theta, images, "cpu"))
    from tatr_core.models import head_logits

    acc = float((head_logits(z, micro_zoo.tasks[t].head.float()).argmax(1) == labels).float().mean())
    assert record["tasks"][t]["accuracy"] == pytest.approx(acc)
    ta = evaluate_method(micro_zoo, "task_arithmetic")
    assert record["average_accuracy"] != ta["average_accuracy"]


def test_one_task_fisher_and_regmean_return_that_fine_tuned_model(micro_zoo):
    z = micro_zoo
    theta_1 = z.task_vectors.pretrained + z.task_vectors.deltas[1]
    for method in ("fisher", "regmean"):
        params = method_params(method, exemplars=8)
        res = merge_tasks(z, method, params, {}, [1])
        assert torch.allclose(res.theta, theta_1, atol=1e-5), method


@pytest.mark.parametrize("method", DATA_METHODS)
def test_tau_zero_is_the_method_without_the_plugin_and_tau_masks_it(micro_zoo, method):
    z = micro_zoo
    plain = method_params(method, **FAST[method])
    zero = method_params(method, tau=0.0, sensitivity="gradient", **FAST[method])
    a, b = merge_tasks(z, method, plain, {}), merge_tasks(z, method, zero, merge_inputs(z, zero))
    assert a.trust_region is None and b.trust_region is None
    assert torch.equal(a.theta, b.theta)
    # τ > 0: nothing moves outside the trust region (Eq. 12 / 13 / the mask on the merged vector)
    tr = method_params(method, tau=0.05, sensitivity="zero-shot", **FAST[method])
    c = merge_tasks(z, method, tr, merge_inputs(z, tr))
    outside = ~c.trust_region.keep
    assert outside.sum() == c.excluded > 0
    assert torch.equal(c.theta[outside], z.task_vectors.pretrained[outside])
    assert not torch.equal(c.theta, a.theta)


def test_data_methods_are_registered_with_checked_parameters():
    for name in DATA_METHODS:
        assert REGISTRY[name].uses_data
    with pytest.raises(TatrError, match="granularity"):
        resolve_params("adamerging", granularity="block")
    with pytest.raises(TatrError, match="no parameter 'rank'"):
        resolve_params("fisher", rank=4)
    with pytest.raises(TatrError, match="alpha of 'regmean' must be a number in"):
        resolve_params("regmean", alpha=1.5)
    with pytest.raises(TatrError, match="steps of 'surgery' must be a whole number"):
        resolve_params("surgery", steps=2.5)
    with pytest.raises(TatrError, match="needs a zoo"):
        from tatr_core.merge import merge

        merge(None, "adamerging")


# ------------------------------------------------------------------------------ command line


def test_cli_eval_runs_the_data_methods_and_reports_what_they_learned(micro_zoo):
    import json

    out = run_cli("eval", "--zoo", "micro", "--method", "adamerging", "--granularity", "task", "--steps", 5, "--json")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["params"]["granularity"] == "task" and record["params"]["steps"] == 5
    assert len(record["learned"]["coefficients"]) == len(micro_zoo.task_names)
    assert record == {**record, **{k: v for k, v in evaluate_method(
        micro_zoo, "adamerging", granularity="task", steps=5).items() if k in ("params", "tasks", "average_accuracy")}}
    text = run_cli("eval", "--zoo", "micro", "--method", "surgery", "--rank", 4, "--steps", 20, "--tau", 0.01)
    assert text.returncode == 0, text.stderr
    assert "surgery L1 gap" in text.stdout and "excluded from the trust region" in text.stdout
    bad = run_cli("eval", "--zoo", "micro", "--method", "regmean", "--alpha", 2)
    assert bad.returncode == 2 and "alpha of 'regmean' must be a number in [0, 1]" in bad.stderr and "Traceback" not in bad.stderr
    wrong = run_cli("eval", "--zoo", "micro", "--method", "fisher", "--rank", 4)
    assert wrong.returncode == 2 and "'fisher' has no parameter 'rank'" in wrong.stderr


def test_cli_merge_explains_that_data_methods_need_a_zoo(tmp_path):
    from tatr_core.checkpoints import save_safetensors

    sd = {"w": torch.zeros(2, 2)}
    paths = [save_safetensors(sd, tmp_path / f"{n}.safetensors") for n in ("pre", "a", "b")]
    out = run_cli("merge", "--pretrained", paths[0], "--finetuned", *paths[1:], "--method", "adamerging",
                  "--out", tmp_path / "m.safetensors")
    assert out.returncode == 2 and "python -m tatr_core eval --zoo ZOO --method adamerging" in out.stderr
    assert not (tmp_path / "m.safetensors").exists()


def test_ties_processed_vectors_are_the_trimmed_sign_agreeing_entries():
    from tatr_core.merge.ties import ties_processed

    g = torch.Generator().manual_seed(5)
    deltas = torch.randn(3, 40, generator=g, dtype=torch.float64)
    got = ties_processed(deltas, 0.25)
    keep = int(0.25 * 40)
    trimmed = torch.zeros_like(deltas)
    for k in range(3):  # the 10 largest |Δ_k| by a full sort
        order = sorted(range(40), key=lambda n: -abs(float(deltas[k, n])))[:keep]
        trimmed[k, order] = deltas[k, order]
    for n in range(40):
        total = sum(float(trimmed[k, n]) for k in range(3))
        elected = (total > 0) - (total < 0)
        for k in range(3):
            v = float(trimmed[k, n])
            want = v if v != 0 and ((v > 0) - (v < 0)) == elected else 0.0
            assert float(got[k, n]) == want
    # summed, they give the TIES merge (the protocol AdaMerging++ follows); divided by the number of
    # agreeing entries, the TIES paper's mean
    from tatr_core.merge.ties import ties
    from tatr_core.vectors import TaskVectors

    tv = TaskVectors.from_state_dicts({"w": torch.zeros(40, dtype=torch.float64)},
                                      [{"w": deltas[k]} for k in range(3)])
    count = (got != 0).sum(0).clamp(min=1)
    assert torch.allclose(ties(tv, {"density": 0.25, "merge_func": "sum"}), got.sum(0), atol=1e-12)
    assert torch.allclose(ties(tv, {"density": 0.25, "merge_func": "mean"}), got.sum(0) / count, atol=1e-12)


def test_training_loops_are_seeded_and_deterministic_on_cpu(micro_zoo):
    from tatr_core.merge.surgery import train_modules

    z, tv = micro_zoo, micro_zoo.task_vectors
    params = {"granularity": "layer", "init": 0.3, "lr": 0.01, "steps": 8, "batch": 8, "seed": 3}
    first = learn_coefficients(z, tv, tv.deltas, z.task_names, params, lambda f, m: None)
    again = learn_coefficients(z, tv, tv.deltas, z.task_names, params, lambda f, m: None)
    other = learn_coefficients(z, tv, tv.deltas, z.task_names, {**params, "seed": 4}, lambda f, m: None)
    assert first == again and first["coefficients"] != other["coefficients"]
    surgery = {"rank": 4, "lr": 0.01, "steps": 10, "batch": 8, "seed": 3}
    theta = tv.pretrained + 0.3 * tv.deltas.sum(0)
    a = train_modules(z, theta, z.task_names[:2], surgery, lambda f, m: None, "cpu")[1]
    b = train_modules(z, theta, z.task_names[:2], surgery, lambda f, m: None, "cpu")[1]
    assert a == b


# ------------------------------------------------------------------ model level, two tasks, independent formulas
def _two_task_merge(zoo, method, **kw):
    idx = [0, 2]
    params = method_params(method, **kw)
    return [zoo.task_names[i] for i in idx], merge_tasks(zoo, method, params, {}, idx).theta


def test_fisher_merge_of_two_tasks_is_the_fisher_weighted_average_of_the_models(micro_zoo):
    from tatr_core.merge.fisher import task_fisher

    z = micro_zoo
    names, theta = _two_task_merge(z, "fisher", exemplars=8)
    layout = z.task_vectors.layout
    fishers = {t: layout.unflatten(task_fisher(z, t, 8, 0)) for t in names}
    for key, sl, shape in layout.items():
        f = [fishers[t][key].double() for t in names]
        models = [z.finetuned[t][key].double() for t in names]
        den = f[0] + f[1]
        expected = torch.where(den > 0, (f[0] * models[0] + f[1] * models[1]) / den.clamp_min(1e-300),
                               (models[0] + models[1]) / 2)  # θ = Σ F_k θ_k / Σ F_k, written on the models
        torch.testing.assert_close(theta[sl].view(shape).double(), expected, atol=2e-6, rtol=1e-5)
    assert not torch.allclose(theta, z.task_vectors.pretrained + z.task_vectors.deltas[[0, 2]].mean(0))


def test_regmean_of_two_tasks_solves_the_regression_in_closed_form(micro_zoo):
    from tatr_core.merge.regmean import task_grams

    z = micro_zoo
    alpha = 0.7
    names, theta = _two_task_merge(z, "regmean", exemplars=8, alpha=alpha)
    grams = {t: task_grams(z, t, 8, 0) for t in names}
    linear = set(grams[names[0]])
    assert {"proj", "transformer.resblocks.0.attn.in_proj_weight", "transformer.resblocks.0.mlp.c_fc.weight"} <= linear
    for key, sl, shape in z.task_vectors.layout.items():
        models = [z.finetuned[t][key].double() for t in names]
        if key in linear:  # W* = (Σ W_k G̃_k)(Σ G̃_k)⁻¹ with an explicit inverse, G̃ = αG + (1 − α) diag G
            scaled = [alpha * grams[t][key] + (1 - alpha) * torch.diag(torch.diagonal(grams[t][key])) for t in names]
            ws = [m.T if key == "proj" else m for m in models]  # proj is applied as x @ proj
            expected = sum(w @ g for w, g in zip(ws, scaled)) @ torch.linalg.inv(sum(scaled))
            expected = expected.T if key == "proj" else expected
        else:
            expected = (models[0] + models[1]) / 2
        got = theta[sl].view(shape).double()
        torch.testing.assert_close(got, expected, atol=1e-5 * (1 + float(expected.abs().max())), rtol=1e-4)
