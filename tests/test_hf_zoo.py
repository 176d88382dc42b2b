"""Real zoos in the formats researchers keep them (issue 22): Hugging Face hub caches (CLIPModel /
CLIPVisionModel folders, parquet datasets), the datasets library's prepared Arrow cache, save_to_disk
folders, ``zoo init`` from the benchmark catalog, and the memory-mapped, decode-what-is-used splits.
Every cache here is written in the hub's exact layout with the real libraries (tests/hf_cache.py); no network."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from hf_cache import (MICRO, clip_model, hf_dataset, model_files, parquet_files, prepared_cache, write_repo)
from tatr_core.evaluate import Evaluator
from tatr_core.zoo import load_zoo

transformers = pytest.importorskip("transformers")
pytest.importorskip("datasets")

ARCH = "TATR-micro-ViT"
CLASSES = {"digits": ["zero", "one", "two"], "shapes": ["circle", "square"]}
SIZES = {"train": 24, "test": 16}


def images_of(task: str, split: str, seed: int) -> tuple[list[np.ndarray], list[int]]:
    """Small photos (not at the model's resolution: they are resized and cropped) whose class shows in them."""
    rng = np.random.default_rng(seed)
    n, k = SIZES[split], len(CLASSES[task])
    labels = [i % k for i in range(n)]
    out = []
    for y in labels:
        h, w = rng.integers(36, 60, 2)
        x = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
        x[:, :, y % 3] += np.uint8(120 + 40 * y)
        out.append(x)
    return out, labels


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A hub cache with a pretrained CLIPModel, two fine-tuned CLIPVisionModels and two parquet datasets, and
    the same datasets as the datasets library's prepared cache and as save_to_disk folders."""
    root = tmp_path_factory.mktemp("hf")
    cache, dcache, scratch = root / "hub", root / "datasets", root / "scratch"
    pre = clip_model(0)
    write_repo(cache, "openai/clip-micro", model_files(pre, scratch / "pre"))
    fts = {}
    for i, task in enumerate(CLASSES):
        ft = clip_model(0, text=False)
        ft.load_state_dict(pre.vision_model.state_dict())
        with torch.no_grad():
            for p in ft.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(10 + i)))
        fts[task] = ft
        write_repo(cache, f"tanganke/clip-micro_{task}", model_files(ft, scratch / f"ft-{task}"))
    sets = {}
    for i, task in enumerate(CLASSES):
        split_images = {s: images_of(task, s, 100 * i + j) for j, s in enumerate(SIZES)}
        dd = hf_dataset({s: v[0] for s, v in split_images.items()}, {s: v[1] for s, v in split_images.items()},
                        CLASSES[task])
        files = parquet_files(dd, scratch / f"pq-{task}")
        write_repo(cache, f"tanganke/{task}", files, dataset=True)
        prepared_cache(files, dcache, f"tanganke/{task}")
        dd.save_to_disk(str(root / f"saved-{task}"))
        sets[task] = split_images
    return {"root": root, "cache": cache, "dcache": dcache, "pre": pre, "fts": fts, "sets": sets}


def manifest(hub, path, data=lambda t: f"hf:tanganke/{t}", cache=None, **extra) -> str:
    tasks = {t: {"finetuned": f"hf:tanganke/clip-micro_{t}", "data": data(t), "templates": ["a photo of a {}."],
                 **extra.get(t, {})} for t in CLASSES}
    path.write_text(yaml.safe_dump({"arch": ARCH, "pretrained": "hf:openai/clip-micro",
                                    "hf_cache": str(cache or hub["cache"]),
                                    "tasks": tasks}, sort_keys=False))
    return str(path)


def test_a_hub_cache_zoo_loads_offline_with_heads_from_the_pretrained_text_tower(hub, tmp_path):
    from tatr_core.models import tokenizer

    zoo = load_zoo(manifest(hub, tmp_path / "zoo.yaml"))
    assert zoo.task_names == list(CLASSES) and zoo.tasks["digits"].classnames == CLASSES["digits"]
    x, y = zoo.tasks["digits"].split("train")
    assert x.shape == (SIZES["train"], 3, 32, 32) and y.tolist() == hub["sets"]["digits"]["train"][1]
    # the zero-shot head: the pretrained CLIPModel's own text tower, as transformers computes it
    tok = tokenizer(ARCH)
    with torch.no_grad():
        for t, names in CLASSES.items():
            ids = tok([f"a photo of a {c}." for c in names])
            out = hub["pre"].get_text_features(input_ids=ids)  # transformers 5: an output with the projected pooler
            want = torch.nn.functional.normalize(getattr(out, "pooler_output", out), dim=-1)
            got = torch.nn.functional.normalize(zoo.tasks[t].head, dim=-1)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # an evaluation against a direct forward of the fine-tuned tower through the pretrained projection
    ev = Evaluator(zoo)
    x, y = zoo.tasks["shapes"].split("test")
    with torch.no_grad():
        feats = hub["pre"].visual_projection(hub["fts"]["shapes"](pixel_values=ev.normalise(x[:])).pooler_output)
    from tatr_core.models import head_logits

    acc = int((head_logits(feats, zoo.tasks["shapes"].head).argmax(1) == y).sum()) / len(y)
    assert ev.evaluate(zoo.finetuned["shapes"], ["shapes"])["shapes"].accuracy == pytest.approx(acc, abs=1e-9)


@pytest.mark.parametrize("layout", ["prepared", "saved"])
def test_the_arrow_layouts_give_the_same_splits_as_the_hub_parquet(hub, tmp_path, layout, monkeypatch):
    parquet = load_zoo(manifest(hub, tmp_path / "pq.yaml"))
    if layout == "prepared":  # only the models stay in the hub cache: the datasets come from the Arrow cache
        monkeypatch.setenv("HF_DATASETS_CACHE", str(hub["dcache"]))
        models_only = tmp_path / "hub"  # the hub cache without the dataset repositories
        for repo in hub["cache"].glob("models--*"):
            shutil.copytree(repo, models_only / repo.name, symlinks=True)
        other = load_zoo(manifest(hub, tmp_path / "arrow.yaml", cache=models_only))
        assert "arrow" in other.tasks["digits"].split("test")[0].source.kind
    else:
        other = load_zoo(manifest(hub, tmp_path / "saved.yaml", data=lambda t: str(hub["root"] / f"saved-{t}")))
    for t in CLASSES:
        for split in SIZES:
            a, b = parquet.tasks[t].split(split), other.tasks[t].split(split)
            assert torch.equal(a[0][:], b[0][:]) and torch.equal(a[1], b[1])


def test_a_split_decodes_only_the_images_it_is_asked_for(hub, tmp_path, monkeypatch):
    from tatr_core.data import store
    from tatr_core.gradients import exemplars_of

    decoded = []
    real = store.preprocess
    monkeypatch.setattr(store, "preprocess", lambda *a, **k: decoded.append(1) or real(*a, **k))
    zoo = load_zoo(manifest(hub, tmp_path / "zoo.yaml", config=None))
    images = zoo.tasks["digits"].split("train")[0]
    fresh = images.decoded()
    exemplars_of(zoo, "digits", 5, 0, "cpu")
    assert len(decoded) <= 5 and images.decoded() <= fresh + 5  # the exemplars, no more
    Evaluator(zoo).evaluate(None, ["shapes"], sample=4)
    assert len(decoded) <= 5 + 4
    assert zoo.tasks["shapes"].split("test")[0].decoded() <= 4 + (SIZES["test"] if fresh == SIZES["train"] else 0)


def tiny_images(n: int, classes: int, seed: int) -> tuple[list[np.ndarray], list[int]]:
    rng = np.random.default_rng(seed)
    labels = [i % classes for i in range(n)]
    return [rng.integers(0, 255, (40, 48, 3)).astype(np.uint8) for _ in labels], labels


def test_zoo_init_writes_a_manifest_from_what_the_cache_holds(tmp_path, monkeypatch):
    from clirun import run_cli

    cache, dcache, scratch = tmp_path / "hub", tmp_path / "datasets", tmp_path / "scratch"
    pre = clip_model(0)
    write_repo(cache, "openai/clip-vit-base-patch32", model_files(pre, scratch / "pre"))
    for i, task in enumerate(("mnist", "eurosat")):
        ft = clip_model(0, text=False)
        ft.load_state_dict(pre.vision_model.state_dict())
        write_repo(cache, f"tanganke/clip-vit-base-patch32_{task}", model_files(ft, scratch / task))
        split = {s: tiny_images(30 if s == "train" else 10, 10, 7 * i + j) for j, s in enumerate(("train", "test"))}
        dd = hf_dataset({s: v[0] for s, v in split.items()}, {s: v[1] for s, v in split.items()}, [str(c) for c in range(10)])
        files = parquet_files(dd, scratch / f"pq-{task}")
        if task == "mnist":  # the hub cache's raw parquet files
            write_repo(cache, "mnist", files, dataset=True)
        else:  # only the datasets library's prepared cache
            prepared_cache(files, dcache, "tanganke/eurosat")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(dcache))
    out = tmp_path / "ta8.yaml"
    r = run_cli("zoo", "init", "--benchmark", "ta8", "--arch", "ViT-B-32", "--hf-cache", cache, "--tasks", "mnist",
                "eurosat", "svhn", "--open-clip-arch", ARCH, "--out", out)
    assert r.returncode == 0, r.stderr
    assert "2 tasks (eurosat, mnist)" in r.stdout or "2 tasks (mnist, eurosat)" in r.stdout
    assert "svhn: model tanganke/clip-vit-base-patch32_svhn: `hf download tanganke/clip-vit-base-patch32_svhn`" in r.stdout
    assert "`hf download svhn --repo-type dataset`" in r.stdout
    written = yaml.safe_load(out.read_text())
    assert written["tasks"]["mnist"]["splits"]["val"] == {"from": "train", "fraction": 0.1, "seed": 0}
    assert written["tasks"]["eurosat"]["classnames"][0] == "annual crop land"
    zoo = load_zoo(str(out))
    assert zoo.task_names == ["eurosat", "mnist"] and len(zoo.tasks["mnist"].split("val")[1]) == 3  # 10% of 30
    from tatr_core.data.sources import split_rows

    _, val_rows = split_rows(30, 0.1, 0)  # FusionBench's random_split, seeded 0
    assert torch.equal(zoo.tasks["mnist"].split("val")[0][:], zoo.tasks["mnist"].split("train")[0][torch.as_tensor(val_rows)])
    r = run_cli("eval", "--zoo", out, "--method", "task_arithmetic", "--json")
    assert r.returncode == 0, r.stderr
    assert set(json.loads(r.stdout)["tasks"]) == {"eurosat", "mnist"}
    # nothing of the benchmark in the cache: a clear error
    r = run_cli("zoo", "init", "--benchmark", "ta8", "--arch", "ViT-B-32", "--hf-cache", cache, "--tasks", "svhn",
                "--out", tmp_path / "none.yaml")
    assert r.returncode == 2 and "none of ta8's tasks is complete" in r.stderr and not (tmp_path / "none.yaml").exists()


def export_zoo(zoo, folder, fmt: str, splits=("train", "test")) -> str:
    """A built-in zoo written out as a researcher's zoo: safetensors checkpoints and heads, and its images as
    PNG folders or as parquet files (with a ClassLabel feature), behind a manifest."""
    from tatr_core.checkpoints import save_safetensors

    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors(zoo.pretrained, folder / "pre.safetensors")
    tasks = {}
    for t, task in zoo.tasks.items():
        save_safetensors(zoo.finetuned[t], folder / f"{t}.safetensors")
        save_safetensors({"weight": task.head}, folder / f"head_{t}.safetensors")
        data = folder / "data" / t
        names = [f"c{c:02d}" for c in range(task.num_classes)]
        pixels = {s: task.split(s)[0].permute(0, 2, 3, 1).numpy() for s in splits}
        labels = {s: task.split(s)[1].tolist() for s in splits}
        if fmt == "png":
            from PIL import Image

            for s in splits:
                for c in names:
                    (data / s / c).mkdir(parents=True, exist_ok=True)
                for i, (x, y) in enumerate(zip(pixels[s], labels[s])):
                    Image.fromarray(x).save(data / s / names[y] / f"{i:05d}.png")
        else:
            parquet_files(hf_dataset({s: list(pixels[s]) for s in splits}, labels, names), data)
        tasks[t] = {"finetuned": f"{t}.safetensors", "head": f"head_{t}.safetensors", "data": f"data/{t}",
                    **({"classes": names} if fmt == "png" else {})}
    (folder / "zoo.yaml").write_text(yaml.safe_dump({"arch": zoo.arch, "pretrained": "pre.safetensors",
                                                     "mean": list(zoo.mean), "std": list(zoo.std), "tasks": tasks}))
    return str(folder / "zoo.yaml")


# (the mini zoo in parquet, 8 tasks of 2,700 images, gave the same numbers too; a minute of the suite's eight)
@pytest.mark.parametrize("preset,fmt", [("micro", "png"), ("micro", "parquet")])
def test_the_mapped_splits_give_the_eager_numbers(preset, fmt, tmp_path, micro_zoo):
    """The same zoo in memory (the built-in one) and read through mapped, lazily decoded splits: the same numbers."""
    from tatr_core.runs import evaluate_method

    eager = micro_zoo if preset == "micro" else load_zoo("mini")
    mapped = load_zoo(export_zoo(eager, tmp_path / preset, fmt))
    for t in eager.task_names:
        a, b = eager.tasks[t].split("test"), mapped.tasks[t].split("test")
        # image folders list the images class by class (a stable sort by label); parquet keeps the rows' order
        order = torch.argsort(a[1], stable=True) if fmt == "png" else torch.arange(len(a[1]))
        assert torch.equal(a[0][order], b[0][:]) and torch.equal(a[1][order], b[1])
    methods = [("individual", {}), ("task_arithmetic", {})] + ([("tatr", {"exemplars": 16})] if fmt == "parquet" and
                                                               preset == "micro" else [])
    for method, kw in methods:
        want = evaluate_method(eager, method, use_cache=False, **kw)
        got = evaluate_method(mapped, method, use_cache=False, **kw)
        if fmt == "parquet" and method == "individual":
            assert got["tasks"] == want["tasks"], method
        else:  # the same accuracies; the losses to float32 rounding (a merge of task vectors read from the zoo's
            # mapped file instead of memory, or the same images summed in another order)
            for t in eager.task_names:
                assert got["tasks"][t]["accuracy"] == want["tasks"][t]["accuracy"]
                assert got["tasks"][t]["loss"] == pytest.approx(want["tasks"][t]["loss"], rel=1e-5)
