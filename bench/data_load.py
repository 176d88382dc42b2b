"""A real-size zoo's images, first and warm, at two sizes 4x apart (issue 22), side by side with a lean loop.

Writes a ViT-B/32 zoo (open_clip's shapes, random weights) whose one task holds synthetic photo-like JPEGs of
300-500 px, kept as the Hugging Face hub keeps a dataset (``datasets--org--name/snapshots/<rev>/data/<split>-*
.parquet``, 100-row groups, blobs and symlinks), at two sizes: S images and 4 S (train / val / test as 60 / 10 /
30 %).  Then, each in a fresh process:

* first load: the zoo loaded with an empty cache and every split preprocessed (``zoo prepare``: decoded on
  every core into the mapped split files); time, images per second, peak RSS;
* lean loop, in the same process just before the decoding: one thread decoding the same parquet cells with PIL
  (the same transform: shorter side bicubic to 224, centre crop), nothing else; images per second, and the
  first load's decoding throughput as a ratio of it;
* warm load: the zoo loaded again and every image of every split read, batch by batch, as a full evaluation
  reads them; time and peak RSS (which should not grow with the number of images);
* cold exemplars (the larger size): ``grads --exemplars 128`` on an empty cache, and how many images it decoded.

Then the projection for TA8, TALL14 and TALL20 from the measured rates and the benchmarks' published split
sizes (approximate: the numbers below are the datasets' usual sizes, not read from a cache).

    .venv/bin/python bench/data_load.py [--small 1250] [--keep DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from multiprocessing import Pool
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FRACTIONS = {"train": 0.6, "val": 0.1, "test": 0.3}
CLASSES = 10
SIZE = 224

#: published split sizes (train + val + test, approximate) of the benchmarks' tasks, for the projection only
IMAGES = {"sun397": 39_700, "stanford-cars": 16_185, "resisc45": 31_500, "eurosat": 27_000, "svhn": 99_289,
          "gtsrb": 39_270, "mnist": 70_000, "dtd": 5_640, "oxford_flowers102": 8_189, "pcam": 327_680,
          "fer2013": 35_887, "oxford-iiit-pet": 7_349, "stl10": 13_000, "cifar100": 60_000, "cifar10": 60_000,
          "food101": 101_000, "fashion_mnist": 70_000, "emnist_letters": 145_600, "kmnist": 70_000,
          "rendered-sst2": 9_613}


# ----------------------------------------------------------------------------------------- the synthetic zoo
def photo(i: int) -> bytes:
    """A photo-like JPEG: smooth colour fields, shapes with edges, and sensor noise, 300-500 px a side."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(i)
    w, h = (int(v) for v in rng.integers(300, 501, 2))
    base = Image.fromarray(rng.integers(0, 255, (6, 6, 3)).astype(np.uint8)).resize((w, h), Image.BICUBIC)
    draw = ImageDraw.Draw(base)
    for _ in range(12):
        x, y = rng.integers(0, w), rng.integers(0, h)
        box = [int(x), int(y), int(x + rng.integers(10, w // 2)), int(y + rng.integers(10, h // 2))]
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    base = base.filter(ImageFilter.GaussianBlur(1.2))
    pixels = np.asarray(base, dtype=np.int16) + rng.normal(0, 6, (h, w, 3)).astype(np.int16)
    buf = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_dataset(hub: Path, repo: str, jpegs: list[bytes], n: int) -> None:
    """``n`` of the photos as a hub-cache dataset repository (parquet shards, blobs, symlinks, refs/main)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = hub / f"datasets--{repo.replace('/', '--')}"
    rev = hashlib.sha1(f"{repo}{n}".encode()).hexdigest()
    snap = root / "snapshots" / rev / "data"
    for d in (root / "blobs", root / "refs", snap):
        d.mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(rev)
    start = 0
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    meta = {b"huggingface": json.dumps({"info": {"features": {
        "image": {"_type": "Image"}, "label": {"_type": "ClassLabel", "names": [f"c{c}" for c in range(CLASSES)]}}}})}
    for split, fraction in FRACTIONS.items():
        k = round(n * fraction)
        rows = range(start, start + k)
        start += k
        table = pa.table({"image": pa.array([{"bytes": jpegs[i], "path": f"{i}.jpg"} for i in rows], type=image_type),
                          "label": pa.array([i % CLASSES for i in rows], type=pa.int64())}).replace_schema_metadata(meta)
        scratch = root / f"{split}.parquet"
        pq.write_table(table, scratch, row_group_size=100)
        blob = root / "blobs" / hashlib.sha256(scratch.read_bytes()).hexdigest()
        scratch.rename(blob)
        os.symlink(os.path.relpath(blob, snap), snap / f"{split}-00000-of-00001.parquet")


def write_zoo(folder: Path, sizes: list[int]) -> dict[int, Path]:
    import torch

    from tatr_core.checkpoints import save_safetensors
    from tatr_core.models import create_clip

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    pre = create_clip("ViT-B-32").visual.state_dict()
    save_safetensors(pre, folder / "pre.safetensors")
    save_safetensors({k: v + 1e-3 * torch.randn_like(v) for k, v in pre.items()}, folder / "ft.safetensors")
    save_safetensors({"weight": torch.nn.functional.normalize(torch.randn(CLASSES, 512), dim=-1)}, folder / "head.safetensors")
    with Pool(os.cpu_count()) as pool:
        jpegs = pool.map(photo, range(max(sizes)), chunksize=32)
    print(f"  {len(jpegs):,} JPEGs, {sum(map(len, jpegs)) / len(jpegs) / 1024:.0f} KiB each on average", flush=True)
    out = {}
    for n in sizes:
        write_dataset(folder / "hub", f"bench/photos{n}", jpegs, n)
        manifest = folder / f"zoo{n}.yaml"
        manifest.write_text(json.dumps({
            "arch": "ViT-B-32", "pretrained": "pre.safetensors", "hf_cache": "hub",
            "tasks": {"photos": {"finetuned": "ft.safetensors", "head": "head.safetensors",
                                 "data": f"hf:bench/photos{n}"}}}))
        out[n] = manifest
    return out


# ----------------------------------------------------------------------------------------- measured in children
CHILDREN = {
    "first": r"""
from tatr_core.zoo import load_zoo
zoo = load_zoo(ZOO)
mark("load_s")
splits = [images for task in zoo.tasks.values() for images, _ in task.splits.values()]
files = sorted({str(f) for images in splits for f in images.source.files})
report["lean_images"] = lean(files)  # the lean loop first, in this same process, on the same files
mark("lean_s")
n = 0
for images in splits:  # then what `zoo prepare` does
    n += images.decode_all(progress=lambda *a: None)
mark("decode_s")
report["images"] = n
""",
    "warm": r"""
from tatr_core.zoo import load_zoo
zoo = load_zoo(ZOO)
mark("load_s")
total = 0
for name, task in zoo.tasks.items():
    for split, (images, labels) in task.splits.items():
        for a in range(0, len(images), 256):
            batch = images[a:a + 256]
            total += int(batch[:, :, ::32, ::32].sum())
mark("pass_s")
report["images"] = sum(len(t.splits[s][0]) for t in zoo.tasks.values() for s in t.splits)
""",
    "exemplars": r"""
from tatr_core import cli
from tatr_core.zoo import load_zoo
code = cli.main(["grads", "--zoo", ZOO, "--exemplars", "128", "--out", OUT])
assert code == 0
zoo = load_zoo(ZOO)
report["decoded"] = {s: images.decoded() for s, (images, _) in zoo.tasks["photos"].splits.items()}
""",
}

PRELUDE = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
ZOO, OUT = {zoo!r}, {out!r}
report = {{}}
t0 = time.perf_counter()
def mark(name):
    global t0
    report[name] = time.perf_counter() - t0
    t0 = time.perf_counter()

def lean(files):
    # the lean reference: one process, one thread, PIL on each parquet cell (the same transform)
    import io
    import numpy as np
    import pyarrow.parquet as pq
    from PIL import Image
    n = 0
    for f in files:
        pf = pq.ParquetFile(f)
        for g in range(pf.num_row_groups):
            for cell in pf.read_row_group(g, columns=["image"]).column(0).to_pylist():
                with Image.open(io.BytesIO(cell["bytes"])) as im:
                    im = im.convert("RGB")
                    w, h = im.size
                    s = 224 / min(w, h)
                    im = im.resize((max(224, round(w * s)), max(224, round(h * s))), Image.BICUBIC)
                    w, h = im.size
                    l, t = (w - 224) // 2, (h - 224) // 2
                    np.asarray(im.crop((l, t, l + 224, t + 224)), dtype=np.uint8).transpose(2, 0, 1)
                n += 1
    return n
start = time.perf_counter()
"""
EPILOGUE = r"""
report["wall_s"] = time.perf_counter() - start
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
report["peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
report["anon_gib"] = int(status["RssAnon"].split()[0]) / 2**20
print("REPORT" + json.dumps(report))
"""


def child(kind: str, zoo: Path, cache: Path, out: Path | None = None) -> dict:
    code = PRELUDE.format(root=str(ROOT), zoo=str(zoo), out=str(out or cache / "grads")) + CHILDREN[kind] + EPILOGUE
    env = dict(os.environ, TATR_CACHE=str(cache), HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        sys.exit(f"{kind} failed:\n{r.stderr[-3000:]}")
    return json.loads(next(line for line in r.stdout.splitlines() if line.startswith("REPORT"))[6:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", type=int, default=1250, help="images of the smaller zoo (the larger has 4x)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the zoos and caches in this folder")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="tatr-data-bench-"))
    sizes = [args.small, 4 * args.small]
    cores = len(os.sched_getaffinity(0))
    print(f"# data_load: {sizes[0]:,} and {sizes[1]:,} images, ViT-B/32 ({SIZE} px), {cores} cores", flush=True)
    zoos = write_zoo(work / "zoo", sizes)
    rows = {}
    for n in sizes:
        cache = work / f"cache{n}"
        shutil.rmtree(cache, ignore_errors=True)
        first = child("first", zoos[n], cache)
        warm = child("warm", zoos[n], cache)
        rows[n] = {"first": first, "warm": warm}
        print(f"  {n:,} images: first {first['load_s'] + first['decode_s']:.1f} s, warm {warm['wall_s']:.1f} s, lean "
              f"{first['lean_s']:.1f} s", flush=True)
    cold = work / "cache-exemplars"
    shutil.rmtree(cold, ignore_errors=True)
    ex = child("exemplars", zoos[sizes[1]], cold, work / "grads")

    print(f"\n| images | first load s (zoo + decoding) | decoding img/s | lean loop img/s | ratio | first peak RSS GiB "
          "| warm load s | warm full pass s | warm peak RSS GiB | warm anon GiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, r in rows.items():
        f, w = r["first"], r["warm"]
        rate, lean_rate = f["images"] / f["decode_s"], f["lean_images"] / f["lean_s"]
        print(f"| {n:,} | {f['load_s'] + f['decode_s']:.1f} ({f['load_s']:.1f} + {f['decode_s']:.1f}) | {rate:.0f} | {lean_rate:.0f} | "
              f"{rate / lean_rate:.2f}x | "
              f"{f['peak_gib']:.2f} | {w['load_s']:.1f} | {w['pass_s']:.1f} | "
              f"{w['peak_gib']:.2f} | {w['anon_gib']:.2f} |")
    a, b = rows[sizes[0]]["warm"], rows[sizes[1]]["warm"]
    print(f"\nwarm, {sizes[1]:,} against {sizes[0]:,} images: load time {b['load_s'] / a['load_s']:.2f}x, peak RSS "
          f"{b['peak_gib'] / a['peak_gib']:.2f}x (target: within 10%)")
    decoded = ex["decoded"]
    print(f"grads --exemplars 128 on a cold {sizes[1]:,}-image zoo: {sum(decoded.values())} images decoded "
          f"({', '.join(f'{s} {k}' for s, k in decoded.items())}), {sum(decoded.values()) / 128:.2f}x the exemplars "
          f"(target: at most 2x); {ex['wall_s']:.1f} s")

    big = rows[sizes[1]]
    rate = big["first"]["images"] / big["first"]["decode_s"]
    lean_rate = big["first"]["lean_images"] / big["first"]["lean_s"]
    per_image = 3 * SIZE * SIZE
    from tatr_core.zoo import catalog  # noqa: E402  (the catalog's task lists)

    print("\nprojection (published split sizes; first preparation at this run's rate per core, scaled to the cores "
          "named; the old design held every split in each process)")
    print("| benchmark | images | mapped files GiB | first prep, 2 cores | first prep, 16 cores | lean loop, 1 core | "
          "held per process, old | held per process, now |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    warm_peak = big["warm"]["peak_gib"]
    for bench in ("ta8", "tall14", "tall20"):
        n = sum(IMAGES[t] for t in catalog.benchmark_tasks(bench))
        per_core = rate / cores
        print(f"| {bench.upper()} | {n:,} | {n * per_image / 2**30:.1f} | {n / (per_core * 2) / 60:.0f} min | "
              f"{n / (per_core * 16) / 60:.0f} min | {n / lean_rate / 60:.0f} min | {n * per_image / 2**30:.1f} GiB | "
              f"{warm_peak:.2f} GiB (this run's warm peak) |")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
