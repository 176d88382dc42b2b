"""Real-zoo manifests: tiny zoos written in each checkpoint format, loaded and evaluated."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tatr_core.checkpoints import save_safetensors
from tatr_core.data.mini import make_colours, make_shapes
from tatr_core.errors import TatrError
from tatr_core.evaluate import Evaluator
from tatr_core.models import create_clip, head_logits, tokenizer, zero_shot_head
from tatr_core.runs import evaluate_method
from tatr_core.zoo import load_zoo
from tiny_models import perturbed, planted_task_vectors_code
from clirun import run_cli

ROOT = Path(__file__).resolve().parents[1]
ARCH = "TATR-micro-ViT"
TASKS = {"shapes": (make_shapes, ["circle", "square", "triangle", "cross", "ring"]),
         "colours": (make_colours, ["red", "green", "blue", "yellow", "magenta", "cyan", "orange", "white"])}


def write_image_folders(root: Path, per_split=(("train", 6), ("test", 12))):
    rng = np.random.default_rng(0)
    for task, (make, classes) in TASKS.items():
        for split, n in per_split:
            images, labels = make(n * len(classes), rng)
            for i, (img, lab) in enumerate(zip(images, labels)):
                d = root / task / split / f"{lab}_{classes[lab]}"
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img.transpose(1, 2, 0)).save(d / f"{i}.png")
    return {task: sorted(p.name for p in (root / task / "test").iterdir()) for task in TASKS}


def heads_for(clip, folders):
    tok = tokenizer(ARCH)
    return {t: zero_shot_head(clip, tok, [f.split("_", 1)[1] for f in folders[t]], ["a {}."]) for t in TASKS}


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoos")
    folders = write_image_folders(root / "data")
    torch.manual_seed(0)
    clip = create_clip(ARCH).eval()
    heads = heads_for(clip, folders)
    fts = {t: perturbed(create_clip(ARCH), 10 + i).visual for i, t in enumerate(TASKS)}
    for t, v in fts.items():
        v.load_state_dict({k: clip.visual.state_dict()[k] + 0.02 * torch.randn_like(p)
                           for k, p in clip.visual.state_dict().items()})
    out = {"folders": folders, "clip": clip, "fts": fts, "heads": heads}

    # (a) task_vectors layout: pickled ImageEncoders and ClassificationHeads
    tv = root / "task_vectors"
    (tv / ARCH).mkdir(parents=True)
    with planted_task_vectors_code() as (modeling, heads_mod):
        import copy

        torch.save(modeling.ImageEncoder(copy.deepcopy(clip)), tv / ARCH / "zeroshot.pt")
        for t in TASKS:
            m = copy.deepcopy(clip)
            m.visual.load_state_dict(fts[t].state_dict())
            (tv / ARCH / t).mkdir()
            torch.save(modeling.ImageEncoder(m), tv / ARCH / t / "finetuned.pt")
            torch.save(heads_mod.ClassificationHead(True, heads[t]), tv / f"head_{t}.pt")
    manifest = {"name": "tv-layout", "arch": ARCH, "pretrained": f"{ARCH}/zeroshot.pt",
                "tasks": {t: {"finetuned": f"{ARCH}/{t}/finetuned.pt", "head": f"head_{t}.pt",
                              "data": str(root / "data" / t)} for t in TASKS}}
    (tv / "zoo.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))

    # (b) open_clip safetensors, heads from class names through the text tower
    oc = root / "open_clip"
    oc.mkdir()
    save_safetensors(clip.visual.state_dict(), oc / "pretrained.safetensors")
    torch.save(clip.state_dict(), oc / "clip.pt")
    for t in TASKS:
        save_safetensors(fts[t].state_dict(), oc / f"{t}.safetensors")
    manifest = {"arch": ARCH, "pretrained": "pretrained.safetensors", "clip": "clip.pt",
                "tasks": {t: {"finetuned": f"{t}.safetensors", "data": f"../data/{t}",
                              "classnames": [f.split("_", 1)[1] for f in folders[t]], "templates": ["a {}."]}
                          for t in TASKS}}
    (oc / "zoo.json").write_text(json.dumps(manifest))
    out["roots"] = {"task_vectors": tv / "zoo.yaml", "open_clip": oc / "zoo.json"}
    return out


def test_task_vectors_layout(layouts):
    zoo = load_zoo(str(layouts["roots"]["task_vectors"]))
    assert zoo.name == "tv-layout" and zoo.task_names == list(TASKS)
    for k, v in layouts["clip"].visual.state_dict().items():
        assert torch.equal(zoo.pretrained[k], v)
    for t in TASKS:
        assert torch.equal(zoo.tasks[t].head, layouts["heads"][t])
        assert all(torch.equal(zoo.finetuned[t][k], v) for k, v in layouts["fts"][t].state_dict().items())
        x, y = zoo.tasks[t].split("test")
        assert x.shape == (12 * len(TASKS[t][1]), 3, 32, 32) and set(y.tolist()) == set(range(len(TASKS[t][1])))
    record = evaluate_method(zoo, "individual", use_cache=False)
    for t in TASKS:  # against a direct forward of the fine-tuned tower on the decoded PNGs
        x, y = zoo.tasks[t].split("test")
        xf = (x.float() / 255 - torch.tensor(zoo.mean).view(1, 3, 1, 1)) / torch.tensor(zoo.std).view(1, 3, 1, 1)
        with torch.no_grad():
            acc = int((head_logits(layouts["fts"][t](xf), layouts["heads"][t]).argmax(1) == y).sum()) / len(y)
        assert abs(record["tasks"][t]["accuracy"] - acc) < 1e-9


def test_open_clip_layout_with_text_heads(layouts):
    zoo = load_zoo(str(layouts["roots"]["open_clip"]))
    for t in TASKS:
        torch.testing.assert_close(zoo.tasks[t].head, layouts["heads"][t])
    tv_zoo = load_zoo(str(layouts["roots"]["task_vectors"]))
    ev1, ev2 = Evaluator(zoo), Evaluator(tv_zoo)
    merged = zoo.task_vectors.to_state_dict(zoo.task_vectors.pretrained + 0.3 * zoo.task_vectors.deltas.sum(0))
    r1, r2 = ev1.evaluate(merged), ev2.evaluate(merged)  # a state dict: flat layouts differ between zoos
    assert {t: r.accuracy for t, r in r1.items()} == {t: r.accuracy for t, r in r2.items()}


transformers = pytest.importorskip("transformers")


def test_hugging_face_layout(tmp_path, layouts):
    cfg = transformers.CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                                        image_size=32, patch_size=8, projection_dim=32, hidden_act="gelu", layer_norm_eps=1e-5)
    torch.manual_seed(0)
    pre = transformers.CLIPVisionModelWithProjection(cfg).eval()
    pre.save_pretrained(tmp_path / "clip-vit-micro")
    tasks, hf_fts = {}, {}
    for i, t in enumerate(TASKS):
        ft = hf_fts[t] = transformers.CLIPVisionModel(cfg).eval()
        ft.load_state_dict(pre.vision_model.state_dict(), strict=False)
        perturbed(ft, 50 + i, 0.01)
        folder = tmp_path / f"clip-vit-micro_{t}"
        folder.mkdir()
        save_safetensors({f"vision_model.{k}" if not k.startswith("vision_model.") else k: v.contiguous()
                          for k, v in ft.state_dict().items()}, folder / "model.safetensors")
        save_safetensors({"weight": layouts["heads"][t]}, tmp_path / f"head_{t}.safetensors")
        tasks[t] = {"finetuned": folder.name, "head": f"head_{t}.safetensors", "data": str(Path(layouts["roots"]["task_vectors"]).parents[1] / "data" / t)}
    (tmp_path / "zoo.yaml").write_text(yaml.safe_dump({"arch": ARCH, "pretrained": "clip-vit-micro", "tasks": tasks}, sort_keys=False))
    zoo = load_zoo(str(tmp_path / "zoo.yaml"))
    assert "proj" in zoo.pretrained and "proj" not in zoo.finetuned["shapes"]
    ev = Evaluator(zoo)
    x, y = zoo.tasks["shapes"].split("test")
    xf = ev.normalise(x)
    with torch.no_grad():  # HF fine-tuned tower + the pretrained projection, as FusionBench evaluates them
        feats = pre.visual_projection(hf_fts["shapes"](pixel_values=xf).pooler_output)
    acc = int((head_logits(feats, zoo.tasks["shapes"].head).argmax(1) == y).sum()) / len(y)
    got = ev.evaluate(zoo.finetuned["shapes"], ["shapes"])["shapes"].accuracy
    assert abs(got - acc) < 1e-9
    merged = evaluate_method(zoo, "tatr", tau=0.05, sensitivity="zero-shot", use_cache=False)
    assert merged["excluded"] == int(0.05 * zoo.task_vectors.N)




def test_task_vectors_are_built_once_into_a_mapped_file_and_weights_are_read_only_when_used(layouts, monkeypatch):
    from tatr_core.vectors import TaskVectors
    from tatr_core.zoo import manifest

    path = str(layouts["roots"]["open_clip"])
    load_zoo(path)  # builds (or finds) the mapped task vectors
    reads = []
    real = manifest.load_image_encoder
    monkeypatch.setattr(manifest, "load_image_encoder", lambda p, *a: reads.append(Path(p).name) or real(p, *a))
    zoo = load_zoo(path)
    assert reads == ["pretrained.safetensors"]  # no fine-tuned checkpoint read to load the zoo again
    root = layouts["roots"]["open_clip"].parent
    ref = TaskVectors.from_files(root / "pretrained.safetensors", [root / f"{t}.safetensors" for t in TASKS], list(TASKS))
    tv = zoo.task_vectors
    assert torch.equal(tv.deltas, ref.deltas) and torch.equal(tv.pretrained, ref.pretrained)
    mapped = zoo.info["vectors"]
    assert mapped in Path("/proc/self/maps").read_text()  # a file mapped into memory, not a copy
    finetuned = zoo.finetuned["colours"]  # read now, when used
    assert reads[-1] == "colours.safetensors"
    assert all(torch.equal(finetuned[k], v) for k, v in layouts["fts"]["colours"].state_dict().items())


def test_a_damaged_task_vector_file_is_rebuilt(layouts):
    path = str(layouts["roots"]["open_clip"])
    zoo = load_zoo(path)
    good = zoo.task_vectors.deltas.clone()
    mapped = Path(zoo.info["vectors"])
    with open(mapped, "r+b") as fh:  # cut short, as by a full disk
        fh.truncate(mapped.stat().st_size // 2)
    assert torch.equal(load_zoo(path).task_vectors.deltas, good)


def test_manifest_errors_exit_2(tmp_path, layouts):
    good = yaml.safe_load(layouts["roots"]["task_vectors"].read_text())
    base = layouts["roots"]["task_vectors"].parent

    def write(name, data):
        p = base / name
        p.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
        return p

    cases = [
        (write("broken.yaml", "arch: [unclosed"), "not valid YAML"),
        (write("nofile.yaml", {**good, "pretrained": "missing.pt"}), "pretrained checkpoint 'missing.pt' does not exist"),
        (write("noarch.yaml", {k: v for k, v in good.items() if k != "arch"}), "the zoo needs 'arch'"),
        (write("typo.yaml", {**good, "pretrianed": "x"}), "unknown field 'pretrianed'"),
        (write("mismatch.yaml", {**good, "tasks": {"shapes": {**good["tasks"]["shapes"], "head": "head_colours.pt"}}}),
         "the head has 8 classes but the data has 5"),
        (tmp_path / "absent.yaml", "no such manifest file"),
    ]
    for path, message in cases:
        r = run_cli("eval", "--zoo", path, "--method", "pretrained")
        assert r.returncode == 2 and message in r.stderr, (path, r.stderr)
        assert "Traceback" not in r.stderr
    r = run_cli("eval", "--zoo", layouts["roots"]["task_vectors"], "--method", "pretrained", "--tasks", "bogus")
    assert r.returncode == 2 and "unknown task 'bogus'" in r.stderr
    with pytest.raises(TatrError, match="unknown zoo"):
        load_zoo("nano")


def test_the_reproduce_command_of_a_manifest_zoo_runs(layouts, capsys):
    """The Merge Lab's "take it with you" command names the manifest (quoted), not the display name."""
    import shlex

    from tatr_core import cli
    from tatr_core.runs import eval_command, method_params

    src = layouts["roots"]["task_vectors"]
    spaced = src.parent / "my zoo (copy).yaml"
    spaced.write_text(src.read_text().replace("name: tv-layout", "name: my zoo"))
    zoo = load_zoo(str(spaced))
    params = method_params("tatr", lam=0.4, tau=0.05, sensitivity="zero-shot")
    command = eval_command(zoo, "tatr", params)
    args = shlex.split(command)
    assert args[:4] == ["python", "-m", "tatr_core", "eval"] and args[args.index("--zoo") + 1] == str(spaced)
    assert cli.main(args[3:] + ["--json", "--no-cache"]) == 0
    printed = json.loads(capsys.readouterr().out)
    direct = evaluate_method(zoo, "tatr", lam=0.4, tau=0.05, sensitivity="zero-shot", use_cache=False)
    assert printed["params"] == direct["params"] == params
    assert printed["average_accuracy"] == direct["average_accuracy"]
