"""``zoo``, ``grads`` and ``eval`` on the command line (micro zoo)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tatr_core.checkpoints import load_image_encoder
from tatr_core.gradients import compute_task_gradients
from tatr_core.merge import merge
from clirun import run_cli

ROOT = Path(__file__).resolve().parents[1]


def test_zoo_info(micro_zoo):
    r = run_cli("zoo", "info", "--zoo", "micro", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["arch"] == "TATR-micro-ViT" and list(info["tasks"]) == micro_zoo.task_names
    assert info["tasks"]["mnist"]["sizes"]["test"] == 120 and len(info["tasks"]["textures"]["classes"]) == 7
    r = run_cli("zoo", "info", "--zoo", "micro")
    assert r.returncode == 0 and "zero-shot" in r.stdout and "mnist" in r.stdout


def test_eval_json_contract(micro_zoo):
    r = run_cli("eval", "--zoo", "micro", "--method", "tatr", "--exemplars", "8", "--json", process=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["method"] == "tatr"
    assert out["params"] == {"lam": 0.3, "tau": 0.01, "sensitivity": "gradient", "exemplars": 8, "seed": 0}
    assert list(out["tasks"]) == micro_zoo.task_names
    for t in out["tasks"].values():
        assert set(t) == {"accuracy", "loss", "n"} and 0 <= t["accuracy"] <= 1 and t["n"] == 120
    assert abs(out["average_accuracy"] - sum(t["accuracy"] for t in out["tasks"].values()) / 4) < 1e-12
    r = run_cli("eval", "--zoo", "micro", "--method", "individual", "--sample", "50", "--json")
    out = json.loads(r.stdout)
    assert all(t["n"] == 50 for t in out["tasks"].values()) and out["params"] == {}
    r = run_cli("eval", "--zoo", "micro", "--method", "ties", "--split", "val")
    assert r.returncode == 0 and "average" in r.stdout and "(val split)" in r.stdout


def test_grads_files_feed_merge_and_match_eval(micro_zoo, tmp_path):
    r = run_cli("grads", "--zoo", "micro", "--exemplars", "8", "--out", tmp_path / "g")
    assert r.returncode == 0, r.stderr
    files = [tmp_path / "g" / f"{t}.grads.safetensors" for t in micro_zoo.task_names]
    assert all(f.exists() for f in files) and (tmp_path / "g" / "mnist.signed_grads.safetensors").exists()
    folder = Path(micro_zoo.info["folder"])
    out = tmp_path / "merged.safetensors"
    r = run_cli("merge", "--pretrained", folder / "pretrained.safetensors",
                "--finetuned", *[folder / f"finetuned_{t}.safetensors" for t in micro_zoo.task_names],
                "--method", "tatr", "--grads", *files, "--out", out)
    assert r.returncode == 0, r.stderr
    g = compute_task_gradients(micro_zoo, 8, 0)
    expected = micro_zoo.task_vectors.to_state_dict(merge(micro_zoo.task_vectors, "tatr", grads=g.abs_mean).theta)
    got = load_image_encoder(out)
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_eval_errors_exit_2(micro_zoo):
    for args, message in (
        (["--method", "tatr", "--exemplars", "0"], "at least 1"),
        (["--method", "pretrained", "--sample", "0"], "sample size must be positive"),
        (["--method", "pretrained", "--tau", "0.1"], "takes no merge parameters"),
        (["--method", "tatr", "--exemplars", "100000"], "ask for at most 300 exemplars"),
    ):
        r = run_cli("eval", "--zoo", "micro", *args)
        assert r.returncode == 2 and message in r.stderr, r.stderr
        assert "Traceback" not in r.stderr


def test_precision_option(micro_zoo, monkeypatch):
    import os

    monkeypatch.delenv("TATR_PRECISION", raising=False)
    out = run_cli("eval", "--zoo", "micro", "--method", "pretrained", "--precision", "bf16", "--sample", "8", "--json")
    assert out.returncode == 0, out.stderr
    bf16 = json.loads(out.stdout)
    assert "TATR_PRECISION" not in os.environ  # set while the command ran, then restored
    out = run_cli("eval", "--zoo", "micro", "--method", "pretrained", "--precision", "fp32", "--sample", "8", "--json")
    fp32 = json.loads(out.stdout)
    assert bf16["tasks"] != fp32["tasks"]  # two computations, cached apart
    bad = run_cli("eval", "--zoo", "micro", "--method", "pretrained", "--precision", "fp16")
    assert bad.returncode == 2 and "invalid choice: 'fp16'" in bad.stderr


def test_a_shipped_build_installs_without_training_and_a_build_from_scratch_reproduces_it(micro_zoo, tmp_path,
                                                                                          monkeypatch):
    from tatr_core import cache
    from tatr_core.errors import TatrError
    from tatr_core.evaluate import Evaluator
    from tatr_core.zoo import mini

    monkeypatch.setattr(mini, "SHIPPED", tmp_path / "shipped")
    built = Path(micro_zoo.info["folder"])
    weights = ["pretrained.safetensors", "heads.safetensors"] + [f"finetuned_{t}.safetensors" for t in micro_zoo.task_names]
    shipped = mini.ship("micro", built)
    assert sorted(p.name for p in shipped.iterdir()) == sorted(weights + ["zoo.json"])  # no images: generated
    monkeypatch.setenv("TATR_CACHE", str(tmp_path / "cache"))  # an empty cache: a newcomer's first start

    def no_training(*args, **kwargs):
        raise AssertionError("the shipped build must install without training")

    with monkeypatch.context() as m:
        m.setattr(mini, "_pretrain", no_training)
        installed = Path(mini.build("micro"))
    info = json.loads((installed / "zoo.json").read_text())
    assert "install_seconds" in info and info["reference_test_accuracy"] == micro_zoo.info["reference_test_accuracy"]
    for name in weights + [f"data_{t}.safetensors" for t in micro_zoo.task_names]:
        assert (installed / name).read_bytes() == (built / name).read_bytes(), name  # images generated identically
    zoo = mini.load("micro")
    assert Evaluator(zoo).evaluate(None, sample=16) == Evaluator(micro_zoo).evaluate(None, sample=16)

    scratch = mini.build("micro", from_scratch=True)
    lines = mini.compare_with_shipped("micro", scratch)
    assert lines[0] == f"weight files bit-identical to the shipped build: {len(weights)} of {len(weights)}"
    assert lines[-1] == "largest accuracy difference: 0.0 points (reproduces the shipped zoo)"

    record = json.loads((shipped / "zoo.json").read_text())
    (shipped / "zoo.json").write_text(json.dumps({**record, "key": "0" * 16}))
    shutil.rmtree(installed)
    with pytest.raises(TatrError, match="does not match its recipe; rebuild it with"):
        mini.build("micro")
    assert not list((tmp_path / "cache").glob("zoos/.micro-*"))  # nothing half-written left


def test_task_images_from_worker_processes_are_the_same_bits_and_a_failed_worker_is_covered(micro_zoo, tmp_path,
                                                                                            monkeypatch, caplog):
    """A zoo's task images come from one worker process per core when there are enough of them: the same
    files as in the process, open_clip's import meanwhile; a failed worker's tasks are generated here."""
    import os
    import sys

    from tatr_core.zoo import mini
    from tatr_core.zoo.base import no_progress

    recipe = mini.PRESETS["micro"]
    assert len(recipe.tasks) * sum(recipe.sizes.values()) < mini.PARALLEL_IMAGES  # the tests' zoo: in the process
    built = Path(micro_zoo.info["folder"])
    monkeypatch.setattr(mini, "PARALLEL_IMAGES", 0)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    for folder, executable in (("workers", sys.executable), ("failed", "/bin/false"), ("none", str(tmp_path / "no"))):
        monkeypatch.setattr(sys, "executable", executable)
        calls, shown = [], []
        (tmp_path / folder).mkdir()
        data = mini._generate_data(recipe, tmp_path / folder, lambda f, m: shown.append(m), 1.0,
                                   meanwhile=lambda: calls.append(1))
        assert calls == [1] and list(data) == list(recipe.tasks)
        for name in recipe.tasks:
            assert (tmp_path / folder / f"data_{name}.safetensors").read_bytes() == \
                (built / f"data_{name}.safetensors").read_bytes(), (folder, name)
        assert any("on 2 cores" in m for m in shown) == (folder != "none")
    # a failed worker, or one that cannot start: every task is still there, generated here, with a notice
    assert "a worker generating task images failed" in caplog.text and "a worker could not start" in caplog.text
    first = recipe.tasks[0]
    assert mini._generate_data(recipe, tmp_path / "workers", no_progress, 1.0)[first]["test"][0].dtype == torch.uint8


def test_zoo_build_from_scratch_on_the_command_line(micro_zoo, tmp_path, monkeypatch):
    """The command itself (the build's bit-for-bit reproduction is tested above), on a recipe of a few steps."""
    import dataclasses

    from tatr_core.zoo import mini

    monkeypatch.setattr(mini, "SHIPPED", tmp_path / "shipped")
    monkeypatch.setitem(mini.PRESETS, "micro", dataclasses.replace(mini.PRESETS["micro"], pretrain_steps=4,
                                                                   finetune_steps=2))
    out = run_cli("zoo", "build", "--preset", "micro", "--from-scratch")
    assert out.returncode == 0, out.stderr
    assert "built from scratch in" in out.stdout and "no shipped build of this recipe to compare with" in out.stdout
    bad = run_cli("zoo", "build", "--preset", "micro", "--ship")
    assert bad.returncode == 2 and "give --from-scratch with it" in bad.stderr
