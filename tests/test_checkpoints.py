"""Reading every supported checkpoint format; refusing unsafe, corrupt or mismatched ones."""
from __future__ import annotations

import json
import os
import pickle
import sys

import pytest
import torch

from tatr_core.checkpoints import load_head, load_image_encoder, read_state_dict, save_safetensors
from tatr_core.errors import CheckpointError
from tatr_core.merge import merge
from tatr_core.vectors import TaskVectors
from tiny_models import TINY_VISION, perturbed, planted_task_vectors_code, tiny_clip


def assert_same(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for k in b:
        assert torch.equal(a[k], b[k]), k


def test_compat_shim_makes_open_clip_importable():
    import open_clip
    import torchvision

    assert "ViT-B-32" in open_clip.list_models()
    assert torchvision.transforms.Resize is not None


def test_compat_shim_leaves_the_operators_to_a_torchvision_extension_that_loads(monkeypatch):
    """On a CUDA machine torchvision's _C.so defines nms/qnms itself: defining them first aborted the
    process there (seen on an H100), so the shim must load the extension and define nothing."""
    from tatr_core import compat

    defined = {"now": False}
    monkeypatch.setattr(compat, "_op_exists", lambda name: defined["now"])
    monkeypatch.setattr(compat, "_load_torchvision_extension", lambda: defined.update(now=True) or True)
    monkeypatch.setattr(compat, "_library", None)
    assert compat.ensure_torchvision_ops() == [] and compat._library is None
    monkeypatch.undo()  # the real state: defined by the extension, or by the shim when it cannot load
    assert compat._op_exists("nms") and compat._op_exists("qnms")


def test_safetensors_roundtrip_is_atomic(tmp_path):
    sd = tiny_clip().visual.state_dict()
    out = save_safetensors(sd, tmp_path / "sub" / "enc.safetensors")
    assert_same(load_image_encoder(out), sd)
    assert sorted(p.name for p in out.parent.iterdir()) == ["enc.safetensors"]  # no temporary left behind


def test_torch_state_dicts_of_whole_clip_and_nested(tmp_path):
    model = tiny_clip()
    torch.save(model.state_dict(), tmp_path / "clip.pt")  # visual.* and text keys
    torch.save({"state_dict": model.visual.state_dict(), "epoch": 3}, tmp_path / "ckpt.bin")
    torch.save({f"module.{k}": v for k, v in model.visual.state_dict().items()}, tmp_path / "ddp.pt")
    for name in ("clip.pt", "ckpt.bin", "ddp.pt"):
        assert_same(load_image_encoder(tmp_path / name), model.visual.state_dict())


def test_task_vectors_pickles_load_without_their_code(tmp_path):
    model = tiny_clip(1)
    with planted_task_vectors_code() as (modeling, heads):
        encoder = modeling.ImageEncoder(model)
        torch.save(encoder, tmp_path / "zeroshot.pt")
        (tmp_path / "MNIST").mkdir()
        torch.save(modeling.ImageEncoder(perturbed(tiny_clip(1), 5)), tmp_path / "MNIST" / "finetuned.pt")
        head = heads.ClassificationHead(True, torch.randn(10, 16), torch.randn(10))
        torch.save(head, tmp_path / "head_MNIST.pt")
    assert "src.modeling" not in sys.modules and "src" not in sys.modules
    with pytest.raises(ModuleNotFoundError):  # the real unpickler could not even load it now
        torch.load(tmp_path / "zeroshot.pt", weights_only=False)
    assert_same(load_image_encoder(tmp_path / "zeroshot.pt"), model.visual.state_dict())
    ft = load_image_encoder(tmp_path / "MNIST" / "finetuned.pt")
    assert not torch.equal(ft["conv1.weight"], model.visual.state_dict()["conv1.weight"])
    h = load_head(tmp_path / "head_MNIST.pt")
    assert torch.equal(h["weight"], head.weight.detach()) and torch.equal(h["bias"], head.bias.detach())
    tv = TaskVectors.from_files(tmp_path / "zeroshot.pt", [tmp_path / "MNIST" / "finetuned.pt"])
    assert tv.names == ["MNIST"] and tv.K == 1


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_a_command_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"conv1.weight": torch.zeros(2), "payload": _RunsACommand(marker)}, tmp_path / "evil.pt")
    with open(tmp_path / "evil.pkl", "wb") as fh:  # legacy, non-zip pickle
        pickle.dump({"w": _RunsACommand(marker)}, fh)
    with planted_task_vectors_code() as (modeling, _):
        enc = modeling.ImageEncoder(tiny_clip())
        enc.model.payload = _RunsACommand(marker)  # hidden inside a whole pickled module
        torch.save(enc, tmp_path / "evil_module.pt")
    for name in ("evil.pt", "evil.pkl", "evil_module.pt"):
        with pytest.raises(CheckpointError) as err:
            load_image_encoder(tmp_path / name)
        assert name in str(err.value) and ("system" in str(err.value) or "refused" in str(err.value).lower())
    assert not marker.exists()


def test_other_globals_are_refused_by_name(tmp_path):
    class Evil:
        def __reduce__(self):
            return (eval, ("1+1",))

    with planted_task_vectors_code() as (modeling, _):
        enc = modeling.ImageEncoder(tiny_clip())
        enc.thing = Evil()
        torch.save(enc, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=r"refused global 'builtins\.eval'"):
        load_image_encoder(tmp_path / "m.pt")


def test_truncated_empty_missing_and_garbage_files(tmp_path):
    sd = tiny_clip().visual.state_dict()
    st = save_safetensors(sd, tmp_path / "a.safetensors")
    data = st.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    torch.save(sd, tmp_path / "b.pt")
    raw = (tmp_path / "b.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    names = ["cut.safetensors", "cut.pt", "empty.pt", "missing.pt"]
    for seed in range(60):  # seeded garbage: every failure inside the decoders must become a clear error
        g = torch.Generator().manual_seed(seed)
        junk = torch.randint(0, 256, (2048,), generator=g, dtype=torch.uint8).numpy().tobytes()
        if seed % 3 == 0:
            junk = b"\x80\x02" + junk  # looks like a pickle
        elif seed % 3 == 1:
            junk = b"PK\x03\x04" + junk  # looks like a zip archive
        (tmp_path / f"junk{seed}.bin").write_bytes(junk)
        names.append(f"junk{seed}.bin")
    for name in names:
        with pytest.raises(CheckpointError) as err:
            load_image_encoder(tmp_path / name)
        assert name in str(err.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_is_reported_with_file_and_key(tmp_path, bad):
    sd = tiny_clip().visual.state_dict()
    sd["transformer.resblocks.1.mlp.c_fc.bias"][3] = bad
    path = save_safetensors(sd, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match=r"bad\.safetensors: key 'transformer\.resblocks\.1\.mlp\.c_fc\.bias' contains (NaN|Inf)"):
        load_image_encoder(path)


def test_mismatched_keys_and_shapes_name_the_file_and_key(tmp_path):
    pre = save_safetensors(tiny_clip().visual.state_dict(), tmp_path / "pre.safetensors")
    sd = tiny_clip(2).visual.state_dict()
    del sd["ln_post.bias"]
    missing = save_safetensors(sd, tmp_path / "missing_key.safetensors")
    sd = tiny_clip(2).visual.state_dict()
    sd["ln_post.bias"] = torch.zeros(7)
    shaped = save_safetensors(sd, tmp_path / "bad_shape.safetensors")
    sd = tiny_clip(2).visual.state_dict()
    sd["extra.weight"] = torch.zeros(2)
    extra = save_safetensors(sd, tmp_path / "extra.safetensors")
    for path, pattern in ((missing, "missing_key.safetensors: key 'ln_post.bias'"),
                          (shaped, r"bad_shape.safetensors: key 'ln_post.bias' has shape \(7,\)"),
                          (extra, "extra.safetensors: key 'extra.weight' is not in the pretrained")):
        with pytest.raises(CheckpointError, match=pattern):
            TaskVectors.from_files(pre, [path])


# ----------------------------------------------------------------------------- Hugging Face
transformers = pytest.importorskip("transformers")


def _hf_config():
    return transformers.CLIPVisionConfig(
        hidden_size=TINY_VISION["width"], intermediate_size=2 * TINY_VISION["width"],
        num_hidden_layers=TINY_VISION["layers"], num_attention_heads=2, image_size=32, patch_size=8,
        projection_dim=16, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    )


def _open_clip_vision(with_proj=True):
    import open_clip

    vt = open_clip.transformer.VisionTransformer(
        image_size=32, patch_size=8, width=TINY_VISION["width"], layers=TINY_VISION["layers"], heads=2,
        mlp_ratio=2.0, output_dim=16, act_layer=open_clip.transformer.QuickGELU,
    )
    if not with_proj:
        vt.proj = None
    return vt.eval()


@pytest.mark.parametrize("layout", ["folder-safetensors", "bin-file"])
def test_hugging_face_clip_vision_weights_forward_match(tmp_path, layout):
    torch.manual_seed(0)
    hf = transformers.CLIPVisionModelWithProjection(_hf_config()).eval()
    if layout == "folder-safetensors":
        hf.save_pretrained(tmp_path / "hf")
        path = tmp_path / "hf"
        assert (path / "model.safetensors").exists()
    else:
        path = tmp_path / "pytorch_model.bin"
        torch.save(hf.state_dict(), path)
    sd = load_image_encoder(path)
    vt = _open_clip_vision()
    vt.load_state_dict(sd, strict=True)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(vt(x), hf(pixel_values=x).image_embeds, atol=1e-5, rtol=1e-4)


def _save_public_layout(model, folder):
    """Write a CLIPVisionModel folder the way the public fine-tuned checkpoints are laid out
    (transformers 4.x: every key under ``vision_model.``)."""
    folder.mkdir(parents=True)
    sd = {k if k.startswith("vision_model.") else f"vision_model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    save_safetensors(sd, folder / "model.safetensors", metadata={"format": "pt"})
    model.config.to_json_file(folder / "config.json")


@pytest.mark.parametrize("layout", ["public-4.x", "transformers-5"])
def test_hugging_face_vision_model_without_projection_merges_with_carried_proj(tmp_path, layout):
    torch.manual_seed(0)
    pre_hf = transformers.CLIPVisionModelWithProjection(_hf_config()).eval()
    pre_hf.save_pretrained(tmp_path / "pre")
    fts = []
    for k in range(2):
        ft = transformers.CLIPVisionModel(_hf_config()).eval()
        ft.load_state_dict({f"vision_model.{n}" if "vision_model." in next(iter(ft.state_dict())) else n: v
                            for n, v in pre_hf.vision_model.state_dict().items()})
        perturbed(ft, 10 + k)
        if layout == "public-4.x":
            _save_public_layout(ft, tmp_path / f"task{k}")
        else:
            ft.save_pretrained(tmp_path / f"task{k}")
        fts.append((tmp_path / f"task{k}", ft))
    ft_sd = load_image_encoder(fts[0][0])
    assert "proj" not in ft_sd
    vt = _open_clip_vision(with_proj=False)
    vt.load_state_dict(ft_sd, strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(vt(x), fts[0][1](pixel_values=x).pooler_output, atol=1e-5, rtol=1e-4)
    tv = TaskVectors.from_files(tmp_path / "pre", [f for f, _ in fts])
    merged = tv.to_state_dict(merge(tv, "task_arithmetic").theta)
    assert torch.equal(merged["proj"], load_image_encoder(tmp_path / "pre")["proj"])
    assert tv.names == ["task0", "task1"]


def test_files_without_a_model_say_so(tmp_path):
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=r"meta\.pt: holds no tensors"):
        load_image_encoder(tmp_path / "meta.pt")
    with pytest.raises(CheckpointError, match=r"list\.pt: holds a list, not a model"):
        load_image_encoder(tmp_path / "list.pt")


# ----------------------------------------------------------------------------- writing the inputs' layout
def _merge_cli(tmp_path, pre, fts, *extra):
    from tatr_core import cli
    from tatr_core.checkpoints import read_state_dict

    out = tmp_path / f"merged{len(extra)}.safetensors"
    assert cli.main(["merge", "--pretrained", str(pre), "--finetuned", *map(str, fts), "--method", "task_arithmetic",
                     "--out", str(out), *extra]) == 0
    return read_state_dict(out)


def test_merge_of_whole_clip_state_dicts_loads_back_into_clip(tmp_path):
    pre_model = tiny_clip(0)
    pre = tmp_path / "pre.bin"
    torch.save(pre_model.state_dict(), pre)
    fts = []
    for k in range(2):
        fts.append(tmp_path / f"ft{k}.bin")
        torch.save(perturbed(tiny_clip(0), 30 + k).state_dict(), fts[-1])
    merged = _merge_cli(tmp_path, pre, fts)
    vision = _merge_cli(tmp_path, pre, fts, "--layout", "vision")
    assert set(merged) == set(pre_model.state_dict()) and "conv1.weight" in vision
    tiny_clip(5).load_state_dict(merged, strict=True)  # the model the inputs came from takes it as it is
    assert all(torch.equal(merged[f"visual.{k}"], v) for k, v in vision.items())
    assert torch.equal(merged["token_embedding.weight"], pre_model.state_dict()["token_embedding.weight"])
    assert not torch.equal(merged["visual.conv1.weight"], pre_model.state_dict()["visual.conv1.weight"])


def test_merge_of_hugging_face_models_stays_in_hugging_face_keys(tmp_path):
    torch.manual_seed(0)
    pre_hf = transformers.CLIPVisionModelWithProjection(_hf_config()).eval()
    pre_hf.save_pretrained(tmp_path / "pre")
    fts = []
    for k in range(2):
        ft = transformers.CLIPVisionModelWithProjection(_hf_config()).eval()
        ft.load_state_dict(pre_hf.state_dict())
        perturbed(ft, 40 + k)
        ft.save_pretrained(tmp_path / f"ft{k}")
        fts.append(tmp_path / f"ft{k}")
    merged = _merge_cli(tmp_path, tmp_path / "pre", fts)
    vision = _merge_cli(tmp_path, tmp_path / "pre", fts, "--layout", "vision")
    assert set(merged) == set(read_state_dict(tmp_path / "pre" / "model.safetensors"))
    back = transformers.CLIPVisionModelWithProjection(_hf_config()).eval()
    back.load_state_dict(merged, strict=True)
    vt = _open_clip_vision()
    vt.load_state_dict(vision, strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the two layouts are the same model
        torch.testing.assert_close(vt(x), back(pixel_values=x).image_embeds, atol=1e-5, rtol=1e-4)


def test_open_clip_to_hugging_face_keys_is_the_inverse_map():
    from tatr_core.checkpoints import hf_clip_vision_to_open_clip, open_clip_to_hf_vision

    sd = _open_clip_vision().state_dict()
    for prefix in ("vision_model.", ""):
        hf = open_clip_to_hf_vision(sd, prefix)
        back = hf_clip_vision_to_open_clip({k if k.startswith(("vision_model.", "visual_")) else f"vision_model.{k}": v
                                            for k, v in hf.items()})
        assert set(back) == set(sd) and all(torch.equal(back[k], v) for k, v in sd.items())


def test_fifo_shard_escape_and_oversized_claims_are_refused_before_reading(tmp_path):
    os.mkfifo(tmp_path / "pipe.safetensors")
    with pytest.raises(CheckpointError, match="not a regular file"):
        read_state_dict(tmp_path / "pipe.safetensors")
    (tmp_path / "m").mkdir()
    save_safetensors({"w": torch.ones(2)}, tmp_path / "outside.safetensors")
    for shard in ("../outside.safetensors", str(tmp_path / "outside.safetensors")):
        (tmp_path / "m" / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": shard}}))
        with pytest.raises(CheckpointError, match="outside the model folder"):
            read_state_dict(tmp_path / "m")
    torch.save({"w": torch.zeros(1).expand(10**12)}, tmp_path / "claims.pt")
    with pytest.raises(CheckpointError, match=r"claims \(1000000000000,\)"):
        read_state_dict(tmp_path / "claims.pt")
    torch.save({"w": torch.arange(12.0).view(3, 4)[1:, 1:]}, tmp_path / "view.pt")  # a real view is fine
    assert torch.equal(read_state_dict(tmp_path / "view.pt")["w"], torch.arange(12.0).view(3, 4)[1:, 1:])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_all_finite_finds_one_bad_value_anywhere(bad, dtype):
    from tatr_core.checkpoints import all_finite

    x = torch.randn(1000, dtype=torch.float64).to(dtype)
    assert all_finite(x) and all_finite(torch.empty(0, dtype=dtype))
    for at in (0, 517, 999):
        y = x.clone()
        y[at] = bad
        assert not all_finite(y) and not all_finite(y.view(10, 100))
