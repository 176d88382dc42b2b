"""The standard CLIP merging benchmarks (TA8, TALL14, TALL20 for ViT-B/32, B/16 and L/14) as FusionBench keeps
them, and ``zoo init``: a manifest written from what the local Hugging Face caches hold.

``benchmarks.json`` beside this module holds, per task, the Hugging Face ids of its fine-tuned models
(``tanganke/clip-vit-base-patch32_<task>`` and the B/16, L/14 ones) and of its dataset (with config and
columns), its class names and the CLIP paper's prompt templates (facts, as FusionBench 0.2.33 lists
them); the validation split is FusionBench's (10% of train, ``random_split`` seeded 0).

:func:`init` checks each model and dataset offline (``snapshot_download(..., local_files_only=True)``;
for a dataset, the hub cache's parquet files or the ``datasets`` library's prepared cache) and writes a
manifest of the tasks it found; each missing one is named with the command that fetches it.  The
zero-shot heads come from the pretrained CLIPModel's text tower, as FusionBench builds them.  A
task_vectors checkpoint folder (``<model>/zeroshot.pt``, ``<model>/<Task>/finetuned.pt``, optional
``head_<Task>.pt``) with image folders is recognised the same way (:func:`init_task_vectors`).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from ..data.hub import datasets_cache, fetch_command, hub_cache, parquet_splits, prepared_splits, snapshot
from ..errors import TatrError

CATALOG_FILE = Path(__file__).with_name("benchmarks.json")


@lru_cache(maxsize=1)
def catalog() -> dict:
    return json.loads(CATALOG_FILE.read_text())


def benchmark_tasks(benchmark: str) -> list[str]:
    benchmarks = catalog()["benchmarks"]
    if benchmark not in benchmarks:
        raise TatrError(f"unknown benchmark '{benchmark}'; choose one of {', '.join(benchmarks)}")
    return list(benchmarks[benchmark])


def _dataset_found(repo: str, config: str | None, cache: Path) -> str | None:
    """Which layout holds the dataset ("hub parquet", "prepared Arrow cache"), or None."""
    try:
        folder = snapshot(f"hf:{repo}", cache, dataset=True)
        if parquet_splits(folder, config, repo):
            return "hub parquet"
    except TatrError:
        pass
    return "prepared Arrow cache" if prepared_splits(repo, config, datasets_cache(cache)) else None


def _model_found(repo: str, cache: Path) -> bool:
    try:
        snapshot(f"hf:{repo}", cache)
        return True
    except TatrError:
        return False


def init(benchmark: str, arch: str, cache: str | Path | None = None, tasks: list[str] | None = None,
         open_clip_arch: str | None = None) -> tuple[dict, list[str]]:
    """(the manifest, the lines naming what is missing and how to fetch it) for ``benchmark`` at ``arch``."""
    cat = catalog()
    if arch not in cat["archs"]:
        raise TatrError(f"unknown architecture '{arch}' for the benchmarks; choose one of {', '.join(cat['archs'])}")
    names = benchmark_tasks(benchmark)
    if tasks:
        unknown = [t for t in tasks if t not in names]
        if unknown:
            raise TatrError(f"{benchmark} has no task '{unknown[0]}'; its tasks are {', '.join(names)}")
        names = [t for t in names if t in tasks]
    hub = hub_cache(cache)
    ids = cat["archs"][arch]
    missing: list[str] = []
    if not _model_found(ids["pretrained"], hub):
        raise TatrError(f"the pretrained model '{ids['pretrained']}' is not in the Hugging Face cache at {hub}; on a "
                        f"machine with access run `{fetch_command(ids['pretrained'], False)}` and copy the cache here "
                        "(or name it with --hf-cache)")
    out_tasks = {}
    for name in names:
        spec = cat["tasks"][name]
        model = ids["finetuned"].format(task=name)
        gaps = []
        if not _model_found(model, hub):
            gaps.append(f"model {model}: `{fetch_command(model, False)}`")
        layout = _dataset_found(spec["dataset"], spec.get("config"), hub)
        if layout is None:
            gaps.append(f"dataset {spec['dataset']}{' (' + spec['config'] + ')' if spec.get('config') else ''}: "
                        f"`{fetch_command(spec['dataset'], True)}`")
        if gaps:
            missing += [f"{name}: {g}" for g in gaps]
            continue
        entry = {"finetuned": f"hf:{model}", "data": f"hf:{spec['dataset']}"}
        for key in ("config", "image_column", "label_column"):
            if spec.get(key):
                entry[key] = spec[key]
        entry |= {"splits": spec["splits"], "classnames": spec["classnames"], "templates": spec["templates"]}
        out_tasks[name] = entry
    if not out_tasks:
        raise TatrError(f"none of {benchmark}'s tasks is complete in the Hugging Face cache at {hub}:\n  "
                        + "\n  ".join(missing))
    manifest = {"name": f"{benchmark} {arch}", "arch": open_clip_arch or ids["open_clip"],
                "pretrained": f"hf:{ids['pretrained']}", "hf_cache": str(hub), "tasks": out_tasks}
    return manifest, missing


def init_task_vectors(folder: str | Path, data: str | Path, arch: str) -> dict:
    """A manifest for a task_vectors checkpoint folder (``zeroshot.pt`` and ``<Task>/finetuned.pt``; heads
    ``head_<Task>.pt`` beside it or one level up) whose tasks' image folders are under ``data`` (``<data>/<Task>``,
    matched without regard to case)."""
    folder, data = Path(folder).resolve(), Path(data).resolve()
    if not (folder / "zeroshot.pt").is_file():
        raise TatrError(f"{folder}: no zeroshot.pt; give the task_vectors folder of one model (checkpoints/<model>)")
    if not data.is_dir():
        raise TatrError(f"{data}: no such data folder")
    by_lower = {p.name.lower(): p for p in data.iterdir() if p.is_dir()}
    tasks = {}
    for ft in sorted(folder.glob("*/finetuned.pt")):
        name = ft.parent.name
        images = by_lower.get(name.lower())
        if images is None:
            raise TatrError(f"{data}: no image folder for task '{name}' (expected {data / name}/<split>/<class>/*)")
        entry: dict = {"finetuned": str(ft), "data": str(images)}
        for head in (folder / f"head_{name}.pt", folder.parent / f"head_{name}.pt"):
            if head.is_file():
                entry["head"] = str(head)
                break
        tasks[name] = entry
    if not tasks:
        raise TatrError(f"{folder}: no <Task>/finetuned.pt under it")
    return {"name": f"task_vectors {folder.name}", "arch": arch, "pretrained": str(folder / "zeroshot.pt"),
            "tasks": tasks}
