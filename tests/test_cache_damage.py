"""A damaged cache never shows a wrong number: every file the project reads back from its own cache is
checked against a hash written with it, and a mismatch is rebuilt (with a one-line notice) or, for the
shipped zoo, refused with the fix.  And a cache that cannot be written is a clear error.

Each case damages one entry as a user, a full disk or a hostile file would, then checks that the
numbers are the ones a clean cache gives."""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from clirun import run_cli
from tatr_core import cache, options
from tatr_core.checkpoints import save_safetensors
from tatr_core.data.mini import make_colours, make_shapes
from tatr_core.errors import TatrError
from tatr_core.models import create_clip, tokenizer, zero_shot_head
from tatr_core.runs import evaluate_method, method_params, method_spec
from tatr_core.zoo import load_zoo

ARCH = "TATR-micro-ViT"


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """A two-task manifest zoo (safetensors weights, head files, image folders) of the micro architecture."""
    root = tmp_path_factory.mktemp("damage")
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    clip = create_clip(ARCH).eval()
    tasks = {}
    for i, (name, make, classes) in enumerate((("shapes", make_shapes, ["circle", "square", "triangle", "cross", "ring"]),
                                               ("colours", make_colours, ["red", "green", "blue", "yellow", "magenta",
                                                                          "cyan", "orange", "white"]))):
        for split, n in (("train", 4), ("test", 6)):
            images, labels = make(n * len(classes), rng)
            for j, (img, lab) in enumerate(zip(images, labels)):
                d = root / "data" / name / split / f"{lab:02d}"
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img.transpose(1, 2, 0)).save(d / f"{j}.png")
        ft = {k: v + 0.02 * torch.randn_like(v) for k, v in clip.visual.state_dict().items()}
        save_safetensors(ft, root / f"{name}.safetensors")
        head = zero_shot_head(clip, tokenizer(ARCH), classes, ["a {}."])
        save_safetensors({"weight": head}, root / f"head_{name}.safetensors")
        tasks[name] = {"finetuned": f"{name}.safetensors", "head": f"head_{name}.safetensors", "data": f"data/{name}"}
    save_safetensors(clip.visual.state_dict(), root / "pre.safetensors")
    (root / "zoo.yaml").write_text(yaml.safe_dump({"arch": ARCH, "pretrained": "pre.safetensors", "tasks": tasks}))
    return root / "zoo.yaml"


@pytest.fixture
def notices(caplog):
    caplog.set_level(logging.WARNING, logger="tatr_core")
    return caplog


def fresh_vectors(manifest: Path) -> tuple[Path, torch.Tensor, dict]:
    """The zoo's task-vector file (built), the deltas as built, and a clean evaluation of Task Arithmetic."""
    from tatr_core.vectors import _VERIFIED

    zoo = load_zoo(str(manifest))
    good = zoo.task_vectors.deltas.clone()
    record = evaluate_method(zoo, "task_arithmetic", use_cache=False)
    _VERIFIED.clear()  # as in a new process: the next load verifies the file
    return Path(zoo.info["vectors"]), good, record


@pytest.mark.parametrize("damage", ["block-copied", "zeros", "random-bytes", "symlink-same-size", "truncated"])
def test_a_damaged_task_vector_file_is_rebuilt_never_served(manifest, notices, damage, tmp_path):
    path, good, clean = fresh_vectors(manifest)
    data = bytearray(path.read_bytes())
    if damage == "block-copied":  # one 4 KiB block copied over another: same size, same magnitudes
        data[4096:8192] = data[0:4096]
        path.write_bytes(bytes(data))
    elif damage == "zeros":
        path.write_bytes(bytes(len(data)))
    elif damage == "random-bytes":
        path.write_bytes(os.urandom(len(data)))
    elif damage == "symlink-same-size":
        other = tmp_path / "other.bin"
        other.write_bytes(bytes(len(data)))
        path.unlink()
        path.symlink_to(other)
    else:
        path.write_bytes(bytes(data[: len(data) // 2]))
    zoo = load_zoo(str(manifest))
    assert torch.equal(zoo.task_vectors.deltas, good)
    again = evaluate_method(zoo, "task_arithmetic", use_cache=False)
    assert again["tasks"] == clean["tasks"]
    assert not path.is_symlink() and any("building it again" in r.message for r in notices.records)


def test_no_cache_rebuilds_the_task_vector_file(manifest):
    path, good, _ = fresh_vectors(manifest)
    before = path.stat().st_mtime_ns
    out = run_cli("eval", "--zoo", manifest, "--method", "task_arithmetic", "--no-cache", "--json")
    assert out.returncode == 0, out.stderr
    assert path.stat().st_mtime_ns != before  # a new file, built and renamed into place
    assert torch.equal(load_zoo(str(manifest)).task_vectors.deltas, good)


def test_a_full_disk_while_the_task_vector_file_is_built_is_a_message(manifest, monkeypatch, tmp_path):
    from tatr_core import vectors

    with options.using(cache_root=tmp_path / "cache"):
        def full(fd, offset, length):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(vectors.os, "posix_fallocate", full)
        with pytest.raises(TatrError, match="the cache cannot be written at .*No space left on device.*TATR_CACHE"):
            load_zoo(str(manifest))
        monkeypatch.undo()
        monkeypatch.setattr(vectors, "check_space", lambda *a, **k: (_ for _ in ()).throw(
            TatrError("the task-vector file needs about 9.9 MiB in X, and 0.1 MiB are free there")))
        with pytest.raises(TatrError, match="needs about"):
            load_zoo(str(manifest))
        assert not list((tmp_path / "cache").rglob("*.tmp"))  # nothing left behind


# ------------------------------------------------------------------------------ records and tensors
def record_path(micro_zoo, method="task_arithmetic"):
    params = method_params(method)
    return method_spec(micro_zoo, method, params, "test", None, 0, micro_zoo.task_names).path()


@pytest.mark.parametrize("damage", ["edited-number", "empty-object", "a-list", "a-folder", "other-key"])
def test_a_damaged_result_is_recomputed_never_shown(micro_zoo, notices, damage):
    clean = evaluate_method(micro_zoo, "task_arithmetic")
    path = record_path(micro_zoo)
    envelope = json.loads(path.read_text())
    if damage == "edited-number":
        envelope["record"]["average_accuracy"] = 0.987654
        path.write_text(json.dumps(envelope))
    elif damage == "empty-object":
        path.write_text("{}")
    elif damage == "a-list":
        path.write_text("[1, 2]")
    elif damage == "a-folder":
        path.unlink()
        (path / "inside").mkdir(parents=True)
    else:  # a valid envelope of another computation, copied over
        path.write_text(json.dumps({**envelope, "key": "0" * 16}))
    again = evaluate_method(micro_zoo, "task_arithmetic")
    assert again["average_accuracy"] == clean["average_accuracy"] != 0.987654
    assert any("is damaged" in r.message for r in notices.records)
    assert path.is_file() and json.loads(path.read_text())["record"]["average_accuracy"] == clean["average_accuracy"]


def test_a_damaged_point_of_an_analysis_is_recomputed(micro_zoo, notices):
    from tatr_core.analysis.conflict import conflict_matrix, conflict_spec

    clean = conflict_matrix(micro_zoo, "task_arithmetic", sample=16, use_cache=False)
    spec = conflict_spec(micro_zoo, "task_arithmetic", sample=16)
    spec.store(clean)
    spec.path().unlink()  # the whole record: gone; its points stay
    points = sorted((cache.root() / "results" / micro_zoo.key / "points").glob("subset-*.json"))
    assert len(points) >= len(micro_zoo.task_names) + 1
    for point in points:  # every point: edited
        envelope = json.loads(point.read_text())
        first = next(iter(envelope["record"]))
        envelope["record"][first]["loss"] += 1.0
        point.write_text(json.dumps(envelope))
    again = conflict_matrix(micro_zoo, "task_arithmetic", sample=16)
    assert again["loss"] == clean["loss"]
    assert any("is damaged" in r.message for r in notices.records)


def test_damaged_gradients_are_recomputed(micro_zoo, notices):
    from tatr_core import cache as cache_module
    from tatr_core.gradients import compute_task_gradients, gradients_path

    clean = compute_task_gradients(micro_zoo, 2, 5).abs_mean.clone()
    path = gradients_path(micro_zoo, 2, 5)
    data = bytearray(path.read_bytes())
    data[-4096:] = bytes(4096)  # the last 4 KiB of the tensors zeroed: the file still reads
    path.write_bytes(bytes(data))
    cache_module._VERIFIED.clear()
    assert torch.equal(compute_task_gradients(micro_zoo, 2, 5).abs_mean, clean)
    assert any("is damaged" in r.message for r in notices.records)


# ------------------------------------------------------------------------------ the shipped zoo
@pytest.fixture
def shipped_micro(micro_zoo, tmp_path, monkeypatch):
    """The session's micro zoo shipped into a scratch folder, and an empty cache to install it into."""
    from tatr_core.zoo import mini

    monkeypatch.setattr(mini, "SHIPPED", tmp_path / "shipped")
    shipped = mini.ship("micro", Path(micro_zoo.info["folder"]))
    monkeypatch.setenv("TATR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(mini, "_VERIFIED", set())
    return shipped


@pytest.mark.parametrize("damage", ["bytes-flipped", "truncated", "accuracy-edited"])
def test_a_tampered_shipped_zoo_is_refused_with_the_fix(shipped_micro, damage):
    from tatr_core.zoo import mini

    if damage == "accuracy-edited":
        record = json.loads((shipped_micro / "zoo.json").read_text())
        record["reference_test_accuracy"]["shapes"]["individual"] = 0.999
        (shipped_micro / "zoo.json").write_text(json.dumps(record))
    else:
        target = shipped_micro / "finetuned_shapes.safetensors"
        data = bytearray(target.read_bytes())
        if damage == "bytes-flipped":
            data[-4096:] = bytes(b ^ 0xFF for b in data[-4096:])
        else:
            data = data[: len(data) // 2]
        target.write_bytes(bytes(data))
    out = run_cli("zoo", "build", "--preset", "micro")
    assert out.returncode == 2 and "is damaged" in out.stderr and "git checkout --" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert not list((cache.root() / "zoos").glob("micro-*"))  # nothing installed
    with pytest.raises(TatrError, match="is damaged"):
        mini.load("micro")


def test_a_damaged_installed_copy_is_installed_again(shipped_micro, notices):
    from tatr_core.zoo import mini

    installed = Path(mini.build("micro"))
    good = load_zoo("micro").tasks["shapes"].splits["test"][0].clone()
    mini._VERIFIED.clear()  # a new process
    data_file = installed / "data_shapes.safetensors"
    data = bytearray(data_file.read_bytes())
    data[-4096:] = bytes(4096)
    data_file.write_bytes(bytes(data))
    zoo = mini.load("micro")
    assert torch.equal(zoo.tasks["shapes"].splits["test"][0], good)
    assert any("installing it again" in r.message for r in notices.records)


# ------------------------------------------------------------------------------ a cache that cannot be written
def test_a_cache_root_that_is_a_file_is_a_message(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with options.using(cache_root=blocker):
        out = run_cli("eval", "--zoo", "micro", "--method", "pretrained")
    assert out.returncode == 2 and "is a file, not a folder: set TATR_CACHE" in out.stderr, out.stderr


def test_a_file_where_a_cache_folder_belongs_is_removed_with_a_notice(micro_zoo, notices):
    folder = cache.root() / "results" / micro_zoo.key / "points"
    shutil.rmtree(folder, ignore_errors=True)
    folder.write_text("a stray file")
    evaluate_method(micro_zoo, "task_arithmetic", sample=8, use_cache=False)
    from tatr_core.analysis.conflict import conflict_matrix

    conflict_matrix(micro_zoo, "task_arithmetic", sample=8, use_cache=False)
    assert folder.is_dir() and any("is not a folder of the cache" in r.message for r in notices.records)


def test_a_full_disk_while_a_result_is_cached_is_a_message_and_leaves_nothing(micro_zoo, monkeypatch):
    real = cache.write_bytes_atomic

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache, "write_bytes_atomic", full)
    out = run_cli("eval", "--zoo", "micro", "--method", "task_arithmetic", "--lam", "0.41", "--sample", "8")
    assert out.returncode == 2 and "the cache cannot be written" in out.stderr and "No space left" in out.stderr
    assert "Traceback" not in out.stderr
    monkeypatch.setattr(cache, "write_bytes_atomic", real)
    assert not list(cache.root().rglob("*.tmp"))
