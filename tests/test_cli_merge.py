"""``python -m tatr_core merge``: the exact command-line contract, end to end."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tatr_core.checkpoints import load_image_encoder, save_safetensors
from tatr_core.merge import merge
from tatr_core.vectors import TaskVectors
from tiny_models import perturbed, planted_task_vectors_code, tiny_clip
from clirun import run_cli

ROOT = Path(__file__).resolve().parents[1]




@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """θ_pre as a task_vectors pickle, three fine-tuned models in three other formats, gradients."""
    d = tmp_path_factory.mktemp("zoo")
    with planted_task_vectors_code() as (modeling, _):
        torch.save(modeling.ImageEncoder(tiny_clip(0)), d / "zeroshot.pt")
    fts = []
    for k, fmt in enumerate(["safetensors", "pt", "clip-pt"]):
        model = perturbed(tiny_clip(0), 100 + k)
        if fmt == "safetensors":
            path = save_safetensors(model.visual.state_dict(), d / "ft_a.safetensors")
        elif fmt == "pt":
            path = d / "ft_b.pt"
            torch.save(model.visual.state_dict(), path)
        else:
            path = d / "ft_c.bin"
            torch.save(model.state_dict(), path)  # a whole open_clip CLIP state dict
        fts.append(path)
    g = torch.Generator().manual_seed(0)
    grads, signed = [], []
    for k in range(3):
        sd = {key: torch.randn(v.shape, generator=g) for key, v in tiny_clip(0).visual.state_dict().items()}
        signed.append(save_safetensors(sd, d / f"signed_{k}.safetensors"))
        grads.append(save_safetensors({key: v.abs() for key, v in sd.items()}, d / f"grads_{k}.safetensors"))
    return {"pre": d / "zeroshot.pt", "fts": fts, "grads": grads, "signed": signed, "dir": d}


def test_task_arithmetic_from_mixed_formats(zoo, tmp_path):
    out = tmp_path / "ta.safetensors"
    r = run_cli("merge", "--pretrained", zoo["pre"], "--finetuned", *zoo["fts"], "--method", "task_arithmetic",
                "--lam", "0.4", "--out", out, process=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("task_arithmetic: K=3 N=") and "excluded=0 " in r.stdout
    tv = TaskVectors.from_files(zoo["pre"], zoo["fts"])
    expected = tv.to_state_dict(merge(tv, "task_arithmetic", lam=0.4).theta)
    got = load_image_encoder(out)
    assert sorted(got) == sorted(expected) and all(torch.equal(got[k], expected[k]) for k in expected)
    with safe_open(str(out), "pt") as fh:
        recipe = json.loads(fh.metadata()["tatr_recipe"])
    assert recipe["method"] == "task_arithmetic" and recipe["params"]["lam"] == 0.4


@pytest.mark.parametrize("sensitivity,flag", [("gradient", "--grads"), ("ntk", "--grads"),
                                              ("positive", "--signed-grads"), ("negative", "--signed-grads")])
def test_tatr_with_gradient_files(zoo, tmp_path, sensitivity, flag):
    out = tmp_path / "tatr.safetensors"
    files = zoo["grads"] if flag == "--grads" else zoo["signed"]
    r = run_cli("merge", "--pretrained", zoo["pre"], "--finetuned", *zoo["fts"], "--method", "tatr",
                "--sensitivity", sensitivity, flag, *files, "--tau", "0.05", "--out", out)
    assert r.returncode == 0, r.stderr
    tv = TaskVectors.from_files(zoo["pre"], zoo["fts"])
    aux = tv.flatten_aux([load_image_encoder(f) for f in files], [str(f) for f in files], "g")
    key = "grads" if flag == "--grads" else "signed_grads"
    res = merge(tv, "tatr", tau=0.05, sensitivity=sensitivity, **{key: aux})
    assert f"excluded={res.excluded:,} " in r.stdout
    if sensitivity in ("gradient", "ntk"):
        assert res.excluded == int(0.05 * tv.N)
    else:  # Appendix C.4: merged where the signed Ω promotes it (about half of the dimensions), whatever τ is
        assert 0.3 * tv.N < res.excluded < 0.7 * tv.N
    got = load_image_encoder(out)
    expected = tv.to_state_dict(res.theta)
    assert all(torch.equal(got[k], expected[k]) for k in expected)


@pytest.mark.parametrize("method", ["average", "ties", "tsv"])
def test_other_methods_with_and_without_the_plugin(zoo, tmp_path, method):
    for extra in ([], ["--tau", "0.02", "--sensitivity", "zero-shot"]):
        out = tmp_path / f"{method}.safetensors"
        r = run_cli("merge", "--pretrained", zoo["pre"], "--finetuned", *zoo["fts"], "--method", method, *extra, "--out", out)
        assert r.returncode == 0, r.stderr
        assert out.exists() and (("excluded=0 " in r.stdout) == (not extra))


@pytest.mark.parametrize("args,message", [
    (["--method", "tatr"], "needs --grads"),
    (["--method", "tatr", "--sensitivity", "positive", "--grads", "G"], "needs --signed-grads"),
    (["--method", "tatr", "--tau", "1.5", "--sensitivity", "zero-shot"], "τ must be a fraction in [0, 1)"),
    (["--method", "ties", "--density", "0"], "density of 'ties' must be a number in (0, 1]"),
    (["--method", "average", "--lam", "0.5"], "λ does not apply"),
    (["--method", "task_arithmetic", "--lam", "nan"], "λ must be finite"),
    (["--method", "tatr", "--grads", "G", "G"], "2 files for 3 fine-tuned models"),
])
def test_bad_options_exit_2_with_a_message(zoo, tmp_path, args, message):
    args = [str(zoo["grads"][0]) if a == "G" else a for a in args]
    out = tmp_path / "never.safetensors"
    r = run_cli("merge", "--pretrained", zoo["pre"], "--finetuned", *zoo["fts"], *args, "--out", out)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


def test_bad_files_exit_2_and_leave_existing_output_untouched(zoo, tmp_path):
    out = tmp_path / "keep.safetensors"
    out.write_bytes(b"previous result")
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(zoo["fts"][0].read_bytes()[:1000])
    for bad, message in ((tmp_path / "nope.pt", "nope.pt: no such file"), (truncated, "cut.safetensors: unreadable")):
        r = run_cli("merge", "--pretrained", zoo["pre"], "--finetuned", zoo["fts"][0], bad, "--method", "task_arithmetic",
                    "--out", out)
        assert r.returncode == 2 and message in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    assert out.read_bytes() == b"previous result"
    r = run_cli("merge", "--pretrained", zoo["pre"], "--finetuned", *zoo["fts"], "--method", "tsv", "--out", tmp_path / "m.pt")
    assert r.returncode == 2 and "*.safetensors" in r.stderr
    r = run_cli("merge", "--pretrained", zoo["pre"], "--finetuned", *zoo["fts"], "--method", "magic", "--out", out)
    assert r.returncode == 2 and "invalid choice" in r.stderr
