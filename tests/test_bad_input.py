"""Bad and hostile input against the command line: every case is a clear ``error:`` line and exit 2,
no traceback, and no input or existing output is touched.

The matrix below is the place to add a case: ``(id, argv, expected fragment of the message)``.
Paths are written with placeholders filled from the ``files`` fixture ({pre}, {ft1}, {d}, ...).
Commands run in process (``cli.main``) to keep the suite fast; the exit codes of the real
process (Ctrl-C, a traceback-free import) are checked in subprocesses at the end.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from tatr_core import cli
from tatr_core.checkpoints import save_safetensors
from tiny_models import perturbed, tiny_clip

ROOT = Path(__file__).resolve().parents[1]

GOOD_MANIFEST = """
arch: TATR-micro-ViT
pretrained: pre.safetensors
tasks:
  one: {{finetuned: ft1.safetensors, head: head.safetensors, data: data}}
{extra}
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad input")  # a space in the path on purpose
    pre = save_safetensors(tiny_clip(0).visual.state_dict(), d / "pre.safetensors")
    [save_safetensors(perturbed(tiny_clip(0), 10 + k).visual.state_dict(), d / f"ft{k + 1}.safetensors")
           for k in range(2)]
    grads = {k: v.abs() for k, v in perturbed(tiny_clip(0), 20).visual.state_dict().items()}
    save_safetensors(grads, d / "g.safetensors")
    bad = dict(grads)
    bad["conv1.weight"] = bad["conv1.weight"][:1]
    save_safetensors(bad, d / "g_bad_shape.safetensors")
    os.link(pre, d / "pre_hardlink.safetensors")
    os.symlink(pre, d / "pre_symlink.safetensors")
    os.mkfifo(d / "fifo.safetensors")
    (d / "a folder.safetensors").mkdir()
    escape = d / "hf_escape"
    escape.mkdir()
    (escape / "model.safetensors.index.json").write_text('{"weight_map": {"conv1.weight": "../pre.safetensors"}}')
    torch.save({"conv1.weight": torch.zeros(1).expand(10**12)}, d / "stride0.pt")  # 1.4 kB claiming 4 TB
    manifests = {
        "image_size_word": "image_size: big",
        "mean_word": "mean: [0.5, x, 0.5]",
        "mean_two": "mean: [0.5, 0.5]",
        "std_zero": "std: [0.5, 0, 0.5]",
        "splits_number": "",
        "arch_list": "",
    }
    for name, extra in manifests.items():
        text = GOOD_MANIFEST.format(extra=extra)
        if name == "splits_number":
            text = text.replace("data: data}", "data: data, splits: 5}")
        if name == "arch_list":
            text = text.replace("arch: TATR-micro-ViT", "arch: [TATR-micro-ViT]")
        (d / f"{name}.yaml").write_text(text)
    (d / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1") + b"arch: TATR-micro-ViT\n")
    (d / "folder.yaml").mkdir()
    # names that would be paths, and documents that would blow up memory
    for name, task in (("task_dotdot", "../../x"), ("task_absolute", "/tmp/x"), ("task_control", "a\u0007b")):
        (d / f"{name}.yaml").write_text(GOOD_MANIFEST.format(extra="").replace("  one:", f"  {json.dumps(task)}:"))
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)},"
        f" *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))
    (d / "aliases.yaml").write_text(laughs + "name: *i\narch: TATR-micro-ViT\n")
    (d / "deep.yaml").write_text("arch: TATR-micro-ViT\nname: " + "[" * 40 + "]" * 40 + "\n")
    (d / "huge.yaml").write_text("arch: TATR-micro-ViT\n# " + "x" * (1 << 20) + "\n")
    (d / "long_mean.yaml").write_text(GOOD_MANIFEST.format(extra="mean: [" + ", ".join(["0.5"] * 100_000) + "]"))
    return d


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file() and not p.is_symlink()}


MERGE = "merge --pretrained {pre} --finetuned {ft1} {ft2} --method task_arithmetic"
CASES = [
    # data loss and silent damage
    ("out-is-pretrained", MERGE + " --out {pre}", "writing there would destroy it"),
    ("out-is-a-symlink-to-an-input", MERGE + " --out {d}/pre_symlink.safetensors", "writing there would destroy it"),
    ("out-is-a-hard-link-to-an-input", MERGE + " --out {d}/pre_hardlink.safetensors", "writing there would destroy it"),
    ("out-is-a-finetuned-input", MERGE + " --out {ft2}", "writing there would destroy it"),
    ("lambda-overflows-float32", MERGE + " --lam 1e40 --out {d}/new.safetensors", "NaN/Inf"),
    ("shard-outside-the-folder", "merge --pretrained {d}/hf_escape --finetuned {ft1} --method average --out {d}/new.safetensors",
     "outside the model folder"),
    ("fifo-as-checkpoint", "merge --pretrained {pre} --finetuned {d}/fifo.safetensors --method average --out {d}/new.safetensors",
     "not a regular file"),
    ("wrong-shaped-grads-at-tau-0", MERGE + " --grads {d}/g_bad_shape.safetensors {d}/g.safetensors --out {d}/new.safetensors",
     "has shape"),
    # outputs that cannot be written
    ("merge-out-is-a-folder", MERGE + " --out '{d}/a folder.safetensors'", "is a folder"),
    ("merge-out-under-a-file", MERGE + " --out {pre}/merged.safetensors", "is a file"),
    ("merge-out-refused-by-the-system", MERGE + " --out /proc/merged.safetensors", "--out /proc/merged.safetensors:"),
    ("grads-out-is-a-file", "grads --zoo micro --exemplars 2 --out {pre}", "is a file"),
    ("grads-zero-exemplars", "grads --zoo micro --exemplars 0 --out {d}/g", "at least 1"),
    ("figure-out-under-a-file", "figure conflict --zoo micro --out {pre}/f.png", "is a file"),
    ("figure-out-is-a-folder", "figure conflict --zoo micro --out '{d}/a folder.safetensors'", "name the figure file"),
    ("table-out-is-a-folder", "table methods --zoo micro --out '{d}/a folder.safetensors'", "is a folder"),
    ("report-out-is-a-file", "report --zoo micro --out {pre}", "is a file"),
    # hostile sizes
    ("stride-0-tensor-claims-4-TB", "merge --pretrained {d}/stride0.pt --finetuned {ft1} --method average --out {d}/new.safetensors",
     "claims"),
    # manifests: every field named
    ("manifest-image-size-word", "zoo info --zoo {d}/image_size_word.yaml", "'image_size'"),
    ("manifest-mean-not-numbers", "zoo info --zoo {d}/mean_word.yaml", "'mean'"),
    ("manifest-mean-two-entries", "zoo info --zoo {d}/mean_two.yaml", "'mean' must be a list of three numbers"),
    ("manifest-std-zero", "zoo info --zoo {d}/std_zero.yaml", "'std' must be positive"),
    ("manifest-splits-number", "zoo info --zoo {d}/splits_number.yaml", "'tasks.one.splits'"),
    ("manifest-arch-list", "zoo info --zoo {d}/arch_list.yaml", "'arch' must be a string"),
    ("manifest-not-utf8", "zoo info --zoo {d}/latin1.yaml", "not UTF-8"),
    ("manifest-is-a-folder", "zoo info --zoo {d}/folder.yaml", "is a folder"),
    # zoos and tasks
    ("eval-duplicate-task", "eval --zoo micro --method pretrained --tasks shapes shapes", "more than once"),
    ("eval-unknown-task", "eval --zoo micro --method pretrained --tasks nope", "unknown task 'nope'"),
    ("table-unknown-zoo", "table methods --zoo {d}/missing.yaml", "no such manifest file"),
    ("report-unknown-zoo", "report --zoo {d}/missing.yaml --out {d}/report", "no such manifest file"),
    ("grads-unknown-zoo", "grads --zoo nozoo --out {d}/g", "unknown zoo 'nozoo'"),
    ("eval-tau-out-of-range", "eval --zoo micro --method tatr --tau 2", "τ"),
    # names from files are not paths
    ("task-named-dotdot", "grads --zoo {d}/task_dotdot.yaml --exemplars 2 --out {d}/g", "holds a path separator"),
    ("task-named-absolute", "grads --zoo {d}/task_absolute.yaml --exemplars 2 --out {d}/g", "holds a path separator"),
    ("task-named-control-character", "zoo info --zoo {d}/task_control.yaml", "holds a control character"),
    # limits before work
    ("landscape-grid-too-fine", "figure landscape --zoo micro --step 0.0001 --out {d}/l.html", "the limit is 61 × 61"),
    ("landscape-step-nan", "figure landscape --zoo micro --step nan --out {d}/l.html", "step must be finite"),
    ("sweep-too-many-values", "figure tau-sweep --zoo micro --values " + " ".join(["0.01"] * 101) + " --out {d}/s.html",
     "over the limit of 100"),
    ("tune-grid-too-long", "tune --zoo micro --method task_arithmetic --lam-grid " + " ".join(["0.3"] * 101),
     "over the limit of 100"),
    ("manifest-yaml-aliases", "zoo info --zoo {d}/aliases.yaml", "YAML alias"),
    ("manifest-too-deep", "zoo info --zoo {d}/deep.yaml", "nests deeper than"),
    ("manifest-too-large", "zoo info --zoo {d}/huge.yaml", "a manifest may hold at most"),
    ("manifest-value-shown-short", "zoo info --zoo {d}/long_mean.yaml", "characters)"),
    # odd values and paths
    ("out-name-300-characters", MERGE + " --out {d}/" + "m" * 300 + ".safetensors", "the limit is 255 per name"),
    ("zoo-name-300-characters", "zoo info --zoo {d}/" + "z" * 300 + ".yaml", "the limit is 255 per name"),
    ("surgery-rank-1e20", "eval --zoo micro --method surgery --rank 100000000000000000000", "in [1, 4096]"),
    ("lambda-1e10-gives-no-nan-accuracy", "eval --zoo micro --method task_arithmetic --lam 1e10 --json",
     "not finite"),
]


@pytest.mark.parametrize("argv, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_error_and_touches_nothing(files, micro_zoo, capsys, argv, fragment):
    import shlex

    before = _digests(files)
    paths = {"pre": files / "pre.safetensors", "ft1": files / "ft1.safetensors", "ft2": files / "ft2.safetensors"}
    args = [token.format(d=files, **paths) for token in shlex.split(argv)]  # placeholders may hold spaces
    code = cli.main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    last = err.strip().splitlines()[-1]  # after any progress bar: one line saying what is wrong
    assert last.startswith("error: ") and fragment in last, err
    assert "Traceback" not in err and len(last) < 600, len(last)  # one short line, whatever the input held
    assert _digests(files) == before  # no input or existing file changed, nothing half-written left beside them
    assert not list(files.glob(".*.tmp")) and not (files / "new.safetensors").exists()


@pytest.mark.parametrize("argv, fragment", [
    ("eval --zoo micro --method dare --seed 100000000000000000000", "a seed is a whole number in [0, 4294967295]"),
    ("eval --zoo micro --method dare --seed 1e20", "a seed is a whole number"),
    ("eval --zoo micro --method surgery --rank 1e20", "invalid int value"),
])
def test_numbers_out_of_range_are_usage_errors(capsys, argv, fragment):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv.split())
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and fragment in err and "Traceback" not in err


def test_a_page_link_with_a_huge_parameter_shows_a_message_not_a_hang(micro_zoo, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("TATR_ZOO", "micro")
    at = AppTest.from_file("../app.py", default_timeout=120)
    at.query_params["zoo"] = "z" * 300 + ".yaml"  # a name the system cannot hold: the CLI's message, on the page
    at.run()
    assert not at.exception
    assert any("the limit is 255 per name" in e.value for e in at.error), [e.value for e in at.error]
    at = AppTest.from_file("../app.py", default_timeout=120)
    at.query_params["zoo"] = "micro" * 100_000  # over the length any control takes: ignored, with a message
    at.run()
    assert not at.exception and not at.error
    assert any("over the limit of 4,096" in w.value for w in at.warning), [w.value for w in at.warning]
    assert at.text_input(key="zoo").value == "micro"  # the default zoo, shown


def test_zoo_build_refuses_an_unknown_preset(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["zoo", "build", "--preset", "huge"])
    assert exit_.value.code == 2 and "invalid choice: 'huge'" in capsys.readouterr().err


def test_out_of_memory_is_a_message_naming_what_to_lower(monkeypatch, capsys):
    def boom(args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(cli.zoo, "_cmd_zoo_info", boom)
    assert cli.main(["zoo", "info", "--zoo", "micro"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory") and "--sample" in err and "--exemplars" in err and "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; /proc covers the refusal")
def test_a_read_only_folder_is_refused_before_any_work(files, capsys, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert cli.main(["table", "methods", "--zoo", "micro", "--out", str(ro / "t.md")]) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o755)


# ------------------------------------------------------------------------- the real process
def _start(*args: str) -> subprocess.Popen:
    # SIGINT back to its default in the child: a runner that starts the tests in the background (a shell's
    # `&`) ignores it, the child would inherit that, and Python then never raises KeyboardInterrupt
    return subprocess.Popen([sys.executable, "-m", "tatr_core", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@contextlib.contextmanager
def started(*args: str):
    """A real ``python -m tatr_core`` process, killed on the way out if a failed check left it running."""
    proc = _start(*args)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_ctrl_c_while_torch_imports_exits_130_without_a_traceback():
    with started("zoo", "info", "--zoo", "micro") as proc:
        time.sleep(0.5)  # the interpreter is up, torch is importing (it takes about 2 s)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:  # again until it stops: a library may
            proc.send_signal(signal.SIGINT)                         # swallow one interrupt inside its import
            time.sleep(0.1)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err  # not -6 (an abort inside torch's C++) nor -2 (killed by the signal)
    assert "Traceback" not in err and err.count("interrupted") == 1, err


def test_ctrl_c_during_a_long_eval_exits_130_and_leaves_no_temporary_file(micro_zoo):
    import threading

    cache_root = Path(os.environ["TATR_CACHE"])
    with started("eval", "--zoo", "micro", "--method", "adamerging", "--steps", "100000", "--no-cache") as proc:
        seen: list[str] = []
        reader = threading.Thread(target=lambda: seen.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
        reader.start()
        deadline = time.monotonic() + 120
        while "AdaMerging step" not in "".join(seen) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # until it is training
        assert "AdaMerging step" in "".join(seen), "".join(seen)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        reader.join(timeout=10)
    err = "".join(seen)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert not list(cache_root.rglob("*.tmp"))


# ================================================================================================= bad data
# Bad data in the formats researchers keep (issue 22): a corrupt or cut parquet file, a label outside the class
# list, a cell that is no image, a decompression bomb, a missing split, a dataset missing from or half downloaded
# into the Hugging Face cache.  Each is one ``error:`` line naming the file or row and the fix, exit 2, no
# traceback; nothing of the input is touched, and no cache entry is left that would later serve wrong images.
#
# And the mapped split file itself: interrupted decoding goes on where it stopped, a damaged image is decoded
# again, and a cut or foreign file is rebuilt, each with the same pixels as an undisturbed run.
#
# The matrix below is the place to add a case: ``(id, how the good zoo is spoilt, command, fragment)``.


SIZES = {"train": 6, "test": 6}


def png(seed: int, w: int = 40, h: int = 36) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3)).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def bomb() -> bytes:
    """A 60-byte PNG whose header claims 50,000 × 50,000 pixels (2.5 G)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def write_split(path: Path, cells: list, labels: list, label_type=None) -> None:
    """A parquet file as the hub keeps one: an image struct {bytes, path} column and an integer label column."""
    image = pa.array([{"bytes": c, "path": None} if isinstance(c, bytes) or c is None else c for c in cells],
                     type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"image": image, "label": pa.array(labels, type=label_type or pa.int64())}), path)


def split_file(folder: Path, split: str) -> Path:
    return folder / "data" / "one" / "data" / f"{split}-00000-of-00001.parquet"


def good_zoo(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    import torch

    from tatr_core.models import create_clip

    torch.manual_seed(0)
    pre = create_clip("TATR-micro-ViT").visual.state_dict()
    save_safetensors(pre, folder / "pre.safetensors")
    save_safetensors({k: v + 0.01 * torch.randn_like(v) for k, v in pre.items()}, folder / "ft.safetensors")
    save_safetensors({"weight": torch.nn.functional.normalize(torch.randn(2, 32, generator=torch.Generator()
                                                                          .manual_seed(0)), dim=-1)},
                     folder / "head.safetensors")
    for j, split in enumerate(SIZES):
        write_split(split_file(folder, split), [png(100 * j + i) for i in range(SIZES[split])],
                    [i % 2 for i in range(SIZES[split])])
    (folder / "zoo.yaml").write_text(yaml.safe_dump({
        "arch": "TATR-micro-ViT", "pretrained": "pre.safetensors", "hf_cache": str(folder / "hub"),
        "tasks": {"one": {"finetuned": "ft.safetensors", "head": "head.safetensors", "data": "data/one"}}}))


def edit_manifest(folder: Path, **task) -> None:
    m = yaml.safe_load((folder / "zoo.yaml").read_text())
    m["tasks"]["one"].update(task)
    (folder / "zoo.yaml").write_text(yaml.safe_dump(m))


def replace_cell(folder: Path, split: str, row: int, cell) -> None:
    cells = [png(100 * list(SIZES).index(split) + i) for i in range(SIZES[split])]
    cells[row] = cell
    write_split(split_file(folder, split), cells, [i % 2 for i in range(SIZES[split])])


def half_downloaded(folder: Path) -> None:
    """The dataset as a hub-cache repository whose test shard's blob never arrived."""
    from hf_cache import write_repo

    files = {f"data/{s}-00000-of-00001.parquet": split_file(folder, s) for s in SIZES}
    snap = write_repo(folder / "hub", "tanganke/one", files, dataset=True)
    blob = (snap / "data" / "test-00000-of-00001.parquet").resolve()
    blob.rename(blob.with_name(blob.name + ".incomplete"))
    edit_manifest(folder, data="hf:tanganke/one")


EVAL = "eval --zoo {zoo} --method pretrained"
INFO = "zoo info --zoo {zoo}"
DATA_CASES = [
    ("parquet-corrupt", lambda f: split_file(f, "test").write_bytes(b"PAR1" + os.urandom(600) + b"PAR1"), INFO,
     "not a readable parquet file"),
    ("parquet-cut-short", lambda f: split_file(f, "test").write_bytes(split_file(f, "test").read_bytes()[:700]), INFO,
     "download the dataset again"),
    ("label-outside-the-classes", lambda f: write_split(split_file(f, "test"), [png(i) for i in range(6)],
                                                        [0, 1, 0, 2, 1, 0]), INFO, "row 3 has label 2, outside the 2 classes"),
    ("label-column-of-words", lambda f: write_split(split_file(f, "test"), [png(i) for i in range(6)], ["a"] * 6,
                                                    pa.string()), INFO, "not class indices"),
    ("no-label-column", lambda f: pq.write_table(pq.read_table(split_file(f, "test")).drop(["label"]),
                                                 split_file(f, "test")), INFO, "no label column"),
    ("cell-not-an-image", lambda f: replace_cell(f, "test", 4, b"this is not a picture"), EVAL, "not a readable image"),
    ("cell-empty", lambda f: replace_cell(f, "test", 2, b""), EVAL, "the image cell is empty"),
    ("cell-names-a-missing-file", lambda f: replace_cell(f, "test", 1, {"bytes": None, "path": "nowhere/x.png"}), EVAL,
     "which does not exist"),
    ("decompression-bomb", lambda f: replace_cell(f, "test", 5, bomb()), EVAL, "decompression bomb"),
    ("no-test-split", lambda f: split_file(f, "test").unlink(), INFO, "has no 'test' split"),
    ("named-split-missing", lambda f: edit_manifest(f, splits={"val": "validation"}), INFO, "has no 'validation' split"),
    ("dataset-not-in-the-cache", lambda f: edit_manifest(f, data="hf:tanganke/absent"), INFO,
     "`hf download tanganke/absent --repo-type dataset`"),
    ("dataset-half-downloaded", half_downloaded, INFO, "is half downloaded"),
]


def _tree_digests(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("spoil, argv, fragment", [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
def test_bad_data_is_a_clear_error_and_leaves_nothing_wrong(tmp_path, capsys, spoil, argv, fragment):
    folder = tmp_path / "zoo"
    good_zoo(folder)
    spoil(folder)
    before = _tree_digests(folder)
    # an evaluation twice: nothing it cached the first time turns the second into a success or a crash
    for attempt in range(2 if argv.startswith("eval") else 1):
        code = cli.main(argv.format(zoo=folder / "zoo.yaml").split())
        err = capsys.readouterr().err
        assert code == 2, err
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: ") and fragment in last, err
        assert "Traceback" not in err and len(last) < 600
    assert _tree_digests(folder) == before
    cache = Path(os.environ["TATR_CACHE"]) / "data"
    assert not list(cache.glob(".*.tmp"))


def test_the_good_zoo_of_the_matrix_runs(tmp_path, capsys):
    """The matrix's cases fail for their own reason: the zoo they spoil evaluates."""
    good_zoo(tmp_path / "zoo")
    assert cli.main(EVAL.format(zoo=tmp_path / "zoo" / "zoo.yaml").split()) == 0, capsys.readouterr().err


# ----------------------------------------------------------------------------------------- the mapped file
class Counting:
    """A source around a real one that counts what it hands out to decode."""

    def __init__(self, inner):
        self.inner, self.asked = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __len__(self):
        return len(self.inner)

    def encoded(self, indices):
        self.asked.extend(indices)
        return self.inner.encoded(indices)


@pytest.fixture
def source(tmp_path):
    from tatr_core.data.sources import ParquetSource

    path = tmp_path / "train-00000-of-00001.parquet"
    write_split(path, [png(i, 30 + i % 7, 40) for i in range(40)], [i % 3 for i in range(40)])
    return ParquetSource([path])


def eager(source, size=16) -> np.ndarray:
    from tatr_core.data.images import preprocess

    return np.stack([preprocess(e, size) for e in source.encoded(list(range(len(source))))])


def test_an_interrupted_decode_goes_on_where_it_stopped(source, tmp_path, monkeypatch):
    from tatr_core.data import store

    real = store.preprocess
    calls = []

    def dies_after_ten(*a, **k):
        if len(calls) == 10:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(store, "preprocess", dies_after_ten)
    images = store.MappedImages(tmp_path / "s.images", source, 16)
    with pytest.raises(KeyboardInterrupt):
        images[:]
    assert images.decoded() == 0  # the batch in flight was never flagged: nothing half-done is served
    monkeypatch.setattr(store, "preprocess", real)
    images[:5]
    again = store.MappedImages(tmp_path / "s.images", Counting(source), 16)
    assert again.decoded() == 5
    assert np.array_equal(again[:].numpy(), eager(source))
    assert sorted(again.source.asked) == list(range(5, 40))  # the five done are not decoded again


def test_a_damaged_image_is_decoded_again_and_a_cut_file_rebuilt(source, tmp_path, capsys):
    from tatr_core.data import store

    path = tmp_path / "s.images"
    want = eager(source)
    assert np.array_equal(store.MappedImages(path, source, 16)[:].numpy(), want)
    offset = store.layout(len(source), 16)["images"] + 7 * 3 * 16 * 16 + 100
    with open(path, "r+b") as fh:  # one byte of image 7 flips on disk
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))
    fresh = store.MappedImages(path, Counting(source), 16)
    assert np.array_equal(fresh[:].numpy(), want)
    assert fresh.source.asked == [7] and "did not match their checksum" in capsys.readouterr().err
    with open(path, "r+b") as fh:  # a file cut short (a full disk, a copy that stopped)
        fh.truncate(path.stat().st_size // 2)
    rebuilt = store.MappedImages(path, source, 16)
    assert "cut short" in capsys.readouterr().err
    assert rebuilt.decoded() == 0 and np.array_equal(rebuilt[:].numpy(), want)
    path.write_bytes(b"TATRIMG1{}" + b"\0" * 100)  # a foreign file under the name
    assert np.array_equal(store.MappedImages(path, source, 16)[3:9].numpy(), want[3:9])


@pytest.mark.parametrize("processes", [False, True])
def test_threads_and_worker_processes_decode_into_the_same_file(source, tmp_path, monkeypatch, processes):
    """Many missing images are decoded by threads of this process and, for a long list, by spawned worker
    processes too; both write straight into the mapped file, and every image is decoded once."""
    from tatr_core.data import store

    monkeypatch.setattr(store, "CHUNK", 4)
    monkeypatch.setattr(store, "POOL_MIN", 1 if processes else 10**9)
    monkeypatch.setattr(store, "THREADS_SUFFICE", 1)
    images = store.MappedImages(tmp_path / "s.images", source, 16)
    images[[0, 39]]
    seen = []
    assert images.decode_all(progress=lambda f, text: seen.append(f), jobs=2) == 38
    assert images.decoded() == 40 and seen[-1] == 1.0 and len(seen) == 10  # one call per chunk of 4 (38 = 9 x 4 + 2)
    assert np.array_equal(images[:].numpy(), eager(source))
    assert np.array_equal(images.labels().numpy(), np.arange(40) % 3)


def test_a_bad_image_stops_the_decoding_threads_and_keeps_what_was_done(source, tmp_path, monkeypatch):
    from tatr_core.data import store
    from tatr_core.errors import TatrError

    monkeypatch.setattr(store, "CHUNK", 4)
    real = store.preprocess
    monkeypatch.setattr(store, "preprocess", lambda e, size, where="": (_ for _ in ()).throw(TatrError(f"{where}: bad"))
                        if where.endswith("row 20") else real(e, size, where))
    images = store.MappedImages(tmp_path / "s.images", source, 16)
    with pytest.raises(TatrError, match="row 20: bad"):
        images.decode_all(jobs=2)
    assert 0 < images.decoded() < 40 and not images._views.flags[20]
    monkeypatch.setattr(store, "preprocess", real)
    assert np.array_equal(images[:].numpy(), eager(source))
