"""Real zoos described by a manifest (YAML or JSON).  Paths are relative to the manifest file.

.. code-block:: yaml

    name: task_vectors ViT-B/32          # optional (default: the file name)
    arch: ViT-B-32                       # an open_clip architecture (ViT-B-32-quickgelu for OpenAI/HF weights)
    pretrained: checkpoints/ViT-B-32/zeroshot.pt    # or hf:openai/clip-vit-base-patch32 (a CLIPModel in the
                                         # Hugging Face cache: its text tower then builds the zero-shot heads)
    clip: clip/ViT-B-32-openai.pt        # optional: CLIP weights with the text tower (open_clip or a Hugging Face
                                         # CLIPModel), for heads built from class names
    hf_cache: ~/.cache/huggingface/hub   # optional: the hub cache for hf: ids (default HF_HUB_CACHE / HF_HOME)
    image_size: 224                      # optional (default: the architecture's)
    mean: [0.48145466, 0.4578275, 0.40821073]   # optional (default: OpenAI CLIP's)
    std: [0.26862954, 0.26130258, 0.27577711]
    tasks:
      MNIST:
        finetuned: checkpoints/ViT-B-32/MNIST/finetuned.pt   # or hf:tanganke/clip-vit-base-patch32_mnist
        head: checkpoints/ViT-B-32/head_MNIST.pt   # or classnames + templates through the text tower
        data: data/MNIST                 # image folders <data>/<split>/<class>/*.png|jpg; a folder of parquet
                                         # files; a save_to_disk folder; or hf:mnist (the hub cache's parquet
                                         # files, or the datasets library's prepared Arrow cache)
        config: cropped_digits           # optional: the dataset's config (hf: and parquet folders)
        image_column: image              # optional (default: the Image feature, else image / img)
        label_column: label              # optional (default: the ClassLabel feature, else label)
        classes: ["0", "1", ...]         # optional: class folders in head-row order (default: sorted)
        classnames: ["0", "1", ...]      # optional: names for prompts and display (default: the folders, or the
                                         # dataset's ClassLabel names)
        templates: ["a photo of the number: \"{}\"."]
        splits:                          # optional: where each split is (default: train, val / validation, test)
          test: test
          val: {from: train, fraction: 0.1, seed: 0}   # FusionBench's validation split, drawn from train

Every problem (unreadable manifest, a missing field or file, a head whose class count does
not match the data, an unknown key) raises :class:`TatrError` naming the file and the fix.  A manifest
is read within stated limits, checked before anything is built from it (:data:`MAX_MANIFEST_BYTES`,
:data:`MAX_DEPTH`, no YAML aliases), and a task name must be a plain name (it becomes part of file
names: :func:`tatr_core.paths.safe_name`).

A split's images are never held whole: each split is a memory-mapped cache file under ``cache/data/``
(:mod:`tatr_core.data.store`), keyed by the stats of its source files, in which an image is decoded
(open_clip's evaluation transform) the first time something uses it.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import torch

from ..cache import digest
from ..checkpoints import load_head, load_image_encoder, read_state_dict, text_tower
from ..data.hub import (SPLIT_NAMES, NotCached, datasets_cache, fetch_command, hub_cache, is_hub_id, model_folder,
                        parse_id, parquet_splits, prepared_splits, saved_splits, snapshot)
from ..data.images import TRANSFORM
from ..data.sources import ArrowSource, FolderSource, ParquetSource, Source
from ..data.store import MappedImages
from ..errors import TatrError, shown
from ..keys import Spec
from ..models import OPENAI_MEAN, OPENAI_STD
from ..paths import check_length, safe_name
from ..vectors import mapped_task_vectors
from .base import Progress, Task, Zoo, no_progress

#: the largest manifest read (a real 20-task zoo's is a few kB)
MAX_MANIFEST_BYTES = 1 << 20
#: how deeply a manifest's mappings and lists may nest (a zoo's need 3)
MAX_DEPTH = 16
TOP_KEYS = {"name", "arch", "pretrained", "clip", "image_size", "mean", "std", "tasks", "hf_cache"}
TASK_KEYS = {"finetuned", "head", "data", "classes", "classnames", "templates", "splits", "config", "image_column",
             "label_column"}
SPLITS = ("train", "val", "test")
DEFAULT_TEMPLATES = ("a photo of a {}.",)


def _check_yaml_shape(text: str, path: Path) -> None:
    """Refuse, before any object is built, a YAML document with aliases (a few bytes of them can stand for
    billions of nodes) or deeper than :data:`MAX_DEPTH`."""
    import yaml

    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise TatrError(f"{path}: uses a YAML alias or anchor (&, *), which manifests do not allow: write each "
                            "value out")
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise TatrError(f"{path}: nests deeper than {MAX_DEPTH} levels; a zoo manifest needs 3")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _read(path: Path) -> dict:
    path = check_length(path, "manifest path")
    if not path.exists():
        raise TatrError(f"{path}: no such manifest file")
    if path.is_dir():
        raise TatrError(f"{path}: is a folder; give the manifest file (.yaml or .json) inside it")
    if not path.is_file():
        raise TatrError(f"{path}: not a regular file (a FIFO, socket or device?); give a manifest file")
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise TatrError(f"{path}: {size:,} bytes; a manifest may hold at most {MAX_MANIFEST_BYTES:,} "
                        "(a zoo's takes a few kB): is this the manifest?")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TatrError(f"{path}: not UTF-8 text (byte {exc.start}); save the manifest as UTF-8") from None
    kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
    try:
        if kind == "JSON":
            data = json.loads(text)
        else:
            import yaml

            _check_yaml_shape(text, path)
            data = yaml.safe_load(text)
    except TatrError:
        raise
    except RecursionError:
        raise TatrError(f"{path}: nests deeper than {MAX_DEPTH} levels; a zoo manifest needs 3") from None
    except Exception as exc:
        raise TatrError(f"{path}: not valid {kind} ({str(exc).splitlines()[0][:200]})") from None
    if not isinstance(data, dict):
        raise TatrError(f"{path}: a zoo manifest is a mapping with arch, pretrained and tasks")
    return data


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _path_field(value: Any, field: str, path: Path) -> None:
    if value is not None and not isinstance(value, str):
        raise TatrError(f"{path}: '{field}' must be a path (a string), got {type(value).__name__} {shown(value)}")


def _name_list(value: Any, field: str, path: Path) -> None:
    if value is not None and (not isinstance(value, list) or not value
                              or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value)):
        raise TatrError(f"{path}: '{field}' must be a non-empty list of names, got {shown(value)}")


def _check_fields(data: dict, path: Path) -> None:
    """Every field's type and range, each error naming the field and what it must be."""
    for key in ("name", "arch"):
        if key in data and data[key] is not None and not isinstance(data[key], str):
            raise TatrError(f"{path}: '{key}' must be a string, got {shown(data[key])}")
    for key in ("pretrained", "clip", "hf_cache"):
        _path_field(data.get(key), key, path)
    if data.get("image_size") is not None:
        size = data["image_size"]
        if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= 4096:
            raise TatrError(f"{path}: 'image_size' must be a whole number of pixels in [8, 4096], got {shown(size)}")
    for key in ("mean", "std"):
        if data.get(key) is None:
            continue
        value = data[key]
        if not isinstance(value, list) or len(value) != 3 or not all(_is_number(v) for v in value):
            raise TatrError(f"{path}: '{key}' must be a list of three numbers (one per RGB channel), got {shown(value)}")
        if key == "std" and not all(v > 0 for v in value):
            raise TatrError(f"{path}: 'std' must be positive in every channel, got {shown(value)}")
    tasks = data.get("tasks")
    if tasks is not None and not isinstance(tasks, dict):
        raise TatrError(f"{path}: 'tasks' must map task names to their files, got {type(tasks).__name__}")
    for name, t in (tasks or {}).items():
        where = f"tasks.{name}"
        if not isinstance(name, (str, int)) or isinstance(name, bool):
            raise TatrError(f"{path}: task name {shown(name)} must be a string")
        safe_name(str(name))
        if not isinstance(t, dict):
            raise TatrError(f"{path}: task '{name}' must be a mapping with finetuned, head and data")
        for key in ("finetuned", "head", "data", "config", "image_column", "label_column"):
            _path_field(t.get(key), f"{where}.{key}", path)
        for key in ("classes", "classnames"):
            _name_list(t.get(key), f"{where}.{key}", path)
        templates = t.get("templates")
        if templates is not None and (not isinstance(templates, list) or not templates
                                      or not all(isinstance(x, str) and "{}" in x for x in templates)):
            raise TatrError(f"{path}: '{where}.templates' must be a list of prompts each containing {{}}, got {shown(templates)}")
        splits = t.get("splits")
        if splits is not None:
            if not isinstance(splits, dict) or not all(k in SPLITS and (isinstance(v, str) and v or _derived(v))
                                                       for k, v in splits.items()):
                raise TatrError(f"{path}: '{where}.splits' must map train / val / test to split or folder names (or "
                                f"{{from: train, fraction: 0.1, seed: 0}}), got {shown(splits)}")


def _derived(value: Any) -> bool:
    """A split drawn from another: ``{from: train, fraction: f, seed: s}`` with 0 < f < 1."""
    return (isinstance(value, dict) and set(value) <= {"from", "fraction", "seed"} and value.get("from") in SPLITS
            and _is_number(value.get("fraction")) and 0 < value["fraction"] < 1
            and isinstance(value.get("seed", 0), int) and not isinstance(value.get("seed", 0), bool))


def _require(data: dict, key: str, where: str, path: Path) -> Any:
    if key not in data or data[key] in (None, ""):
        raise TatrError(f"{path}: {where} needs '{key}'")
    return data[key]


def _file(base: Path, value: Any, what: str, manifest: Path) -> Path:
    p = (base / str(value)).resolve() if not os.path.isabs(str(value)) else Path(value)
    if not p.exists():
        raise TatrError(f"{manifest}: {what} '{value}' does not exist (looked at {p})")
    if not (p.is_file() or p.is_dir()):
        raise TatrError(f"{manifest}: {what} '{value}' is not a regular file or folder (a FIFO, socket or device?)")
    return p


def _stat(path: Path) -> list:
    files = [path] if path.is_file() else sorted(q for q in path.rglob("*") if q.is_file())
    return [[str(q), q.stat().st_size, q.stat().st_mtime_ns] for q in files]


def _checkpoint(base: Path, value: Any, what: str, manifest: Path, cache: Path) -> Path:
    """A checkpoint file or folder named by path, or by ``hf:`` id (its snapshot folder in the hub cache)."""
    if is_hub_id(value):
        return model_folder(str(value), cache)
    return _file(base, value, what, manifest)


def _split_sources(base: Path, t: dict, where: str, manifest: Path, cache: Path) -> tuple[dict, list[str] | None, str]:
    """The task's splits as sources ({split: Source}), the dataset's class names when it records them (a
    ClassLabel feature), and where the data is, for display."""
    value = _require(t, "data", where, manifest)
    wanted = {"train": "train", "val": "val", "test": "test", **(t.get("splits") or {})}
    columns = {"image_column": t.get("image_column"), "label_column": t.get("label_column")}
    if is_hub_id(value):
        repo = parse_id(str(value))[0]
        try:
            folder = snapshot(str(value), cache, dataset=True)
            files = parquet_splits(folder, t.get("config"), repo)
            if not files:
                raise TatrError(f"dataset '{repo}' in {folder} holds no parquet files")
            kind, found, features, root = "parquet", files, {}, folder
        except TatrError as hub_error:
            prepared = prepared_splits(repo, t.get("config"), datasets_cache(cache))
            if prepared is None and isinstance(hub_error, NotCached):
                raise TatrError(f"{manifest}: {where}: dataset '{repo}' is neither in the Hugging Face cache at {cache} "
                                "nor prepared in a datasets cache (HF_DATASETS_CACHE); no network is used: on a machine "
                                f"with access run `{fetch_command(repo, True)}`, then copy the cache here (or name it "
                                "with hf_cache)") from None
            if prepared is None:
                raise TatrError(f"{manifest}: {where}: {hub_error}") from None
            found, features, root = prepared
            kind = "arrow"
        shown_as = f"{value}"
    else:
        root = _file(base, value, f"{where}: data", manifest)
        shown_as = str(root)
        if not root.is_dir():
            raise TatrError(f"{manifest}: {where}: data '{value}' is a file; give the dataset's folder")
        if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
            found, features = saved_splits(root)
            kind = "arrow"
        elif next(root.rglob("*.parquet"), None) is not None:
            found, features, kind = parquet_splits(root, t.get("config"), str(root)), {}, "parquet"
        else:
            return {s: root / name for s, name in wanted.items() if isinstance(name, str)
                    and (root / name).is_dir()} | {s: spec for s, spec in wanted.items() if _derived(spec)}, None, shown_as
    by_name = {SPLIT_NAMES.get(k, k): k for k in found}  # "validation" answers "val"
    sources: dict = {}
    names = None
    for split, spec in wanted.items():
        if _derived(spec):
            sources[split] = spec
            continue
        key = spec if spec in found else by_name.get(SPLIT_NAMES.get(spec, spec))
        if key is None:
            if split == "test" or spec != split:
                raise TatrError(f"{manifest}: {where}: the dataset {shown_as} has no '{spec}' split (it has "
                                f"{', '.join(found)}); name the split with 'splits'")
            continue
        make = ParquetSource if kind == "parquet" else ArrowSource
        extra = {} if kind == "parquet" else {"features": features}
        sources[split] = make(found[key], base=root, **columns, **extra)
        names = names or sources[split].classnames()
    return sources, names, shown_as


def _resolve_derived(sources: dict, where: str, manifest: Path) -> dict:
    """Splits drawn from another ({from: train, fraction, seed}) as subsets of it; the split they come from stays whole."""
    from ..data.sources import Subset, split_rows

    out = {s: v for s, v in sources.items() if not isinstance(v, dict)}
    for split, spec in sources.items():
        if isinstance(spec, dict):
            parent = out.get(spec["from"])
            if parent is None:
                raise TatrError(f"{manifest}: {where}: split '{split}' is drawn from '{spec['from']}', which it lacks")
            _, rows = split_rows(len(parent), spec["fraction"], spec.get("seed", 0))
            out[split] = Subset(parent, rows, f"{split}: {spec['fraction']:g} of {spec['from']}, seed {spec.get('seed', 0)}")
    return out


def _mapped(source: Source, size: int, classes: int) -> tuple[MappedImages, torch.Tensor]:
    """A split's images as a mapped cache file keyed by its source's file stats; and its labels."""
    spec = Spec.of("data", "", {"source": digest(source.fingerprint()), "kind": source.kind, "size": size,
                                "transform": TRANSFORM}, precision="auto")
    labels = (lambda: source.labels()) if isinstance(source, FolderSource) else (lambda: source.labels(classes))
    images = MappedImages(spec.path(), source, size, labels=labels)
    return images, images.labels()


def _text_model(arch: str, sd: dict, source: Path):
    """An open_clip CLIP of ``arch`` holding the text tower in ``sd`` (open_clip or Hugging Face keys)."""
    from ..models import create_clip

    text = text_tower(sd, str(source))
    if not text:
        return None
    model = create_clip(arch)
    missing, _ = model.load_state_dict(text, strict=False)
    text_missing = [k for k in missing if not k.startswith("visual.") and k != "attn_mask"]
    if text_missing:
        raise TatrError(f"{source}: the text tower lacks '{text_missing[0]}' for architecture '{arch}'; give CLIP weights "
                        "of this architecture with the text tower")
    return model.eval()


def load(path: Path, progress: Progress = no_progress) -> Zoo:
    from ..models import open_clip_module, tokenizer, zero_shot_head

    open_clip = open_clip_module()
    path = Path(path).resolve()
    data = _read(path)
    base = path.parent
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise TatrError(f"{path}: unknown field {shown(sorted(map(str, unknown))[0])} (fields: "
                        f"{', '.join(sorted(TOP_KEYS))})")
    _check_fields(data, path)
    arch = str(_require(data, "arch", "the zoo", path))
    if arch not in open_clip.list_models():
        raise TatrError(f"{path}: unknown architecture {shown(arch)}; use an open_clip model name such as ViT-B-32")
    tasks_cfg = _require(data, "tasks", "the zoo", path)
    if not isinstance(tasks_cfg, dict) or not tasks_cfg:
        raise TatrError(f"{path}: 'tasks' must map task names to their files")
    given = os.path.expanduser(str(data["hf_cache"])) if data.get("hf_cache") else None
    cache = hub_cache(None if given is None else given if os.path.isabs(given) else base / given)
    cfg = open_clip.get_model_config(arch) or {}
    size = int(data.get("image_size") or cfg.get("vision_cfg", {}).get("image_size", 224))
    mean = tuple(float(x) for x in data.get("mean") or OPENAI_MEAN)
    std = tuple(float(x) for x in data.get("std") or OPENAI_STD)
    pre_path = _checkpoint(base, _require(data, "pretrained", "the zoo", path), "pretrained checkpoint", path, cache)
    progress(0.0, "loading the pretrained image encoder")
    pretrained = load_image_encoder(pre_path)
    stats: dict = {"manifest": data, "pretrained": _stat(pre_path)}

    clip_model = tok = None
    tasks: dict[str, Task] = {}
    finetuned = {}
    for i, (name, t) in enumerate(tasks_cfg.items()):
        where = f"task '{name}'"
        if not isinstance(t, dict):
            raise TatrError(f"{path}: {where} must be a mapping with finetuned, head and data")
        bad = set(t) - TASK_KEYS
        if bad:
            raise TatrError(f"{path}: {where} has unknown field {shown(sorted(map(str, bad))[0])} (fields: "
                            f"{', '.join(sorted(TASK_KEYS))})")
        progress(0.1 + 0.8 * i / len(tasks_cfg), f"loading task {name}")
        ft_path = _checkpoint(base, _require(t, "finetuned", where, path), f"{where}: fine-tuned checkpoint", path, cache)
        finetuned[str(name)] = ft_path
        sources, dataset_names, shown_as = _split_sources(base, t, where, path, cache)
        if "test" not in sources:
            raise TatrError(f"{path}: {where}: no test split in {shown_as} (expected <data>/test/<class>/*, or a "
                            "dataset with a test split; name it with 'splits')")
        folders = isinstance(sources["test"], Path)
        if folders:  # image folders: the classes are the test split's class folders
            classes = [str(c) for c in t.get("classes") or sorted(p.name for p in sources["test"].iterdir() if p.is_dir())]
            sources = {s: FolderSource(v, classes, path) if isinstance(v, Path) else v for s, v in sources.items()}
            classnames = [str(c) for c in t.get("classnames") or classes]
        else:
            classnames = [str(c) for c in t.get("classnames") or dataset_names or []]
            classes = classnames
        sources = _resolve_derived(sources, where, path)
        if t.get("head"):
            head_path = _checkpoint(base, t["head"], f"{where}: head", path, cache)
            head = load_head(head_path)["weight"].float()
            stats[f"head:{name}"] = _stat(head_path)
        else:
            if not classnames:
                raise TatrError(f"{path}: {where}: the dataset records no class names (no ClassLabel feature) and the "
                                "task has no head; give 'classnames' (in label order) or 'head'")
            if clip_model is None:
                if data.get("clip"):
                    clip_path = _checkpoint(base, data["clip"], "CLIP checkpoint", path, cache)
                    clip_model = _text_model(arch, read_state_dict(clip_path), clip_path)
                    if clip_model is None:
                        raise TatrError(f"{clip_path}: holds no text tower; 'clip' must be CLIP weights with the text "
                                        "tower (open_clip, or a Hugging Face CLIPModel)")
                else:  # the pretrained CLIPModel's own text tower, as FusionBench builds its heads
                    clip_path = pre_path
                    clip_model = _text_model(arch, read_state_dict(pre_path), pre_path)
                    if clip_model is None:
                        raise TatrError(f"{path}: {where} has no head file, and the pretrained checkpoint has no text "
                                        "tower to build one from class names: give 'head', or 'clip' (CLIP weights "
                                        "with the text tower)")
                tok = tokenizer(arch)
                stats["clip"] = _stat(clip_path)
            head = zero_shot_head(clip_model, tok, classnames, t.get("templates") or DEFAULT_TEMPLATES)
        if classes and head.shape[0] != len(classes):
            raise TatrError(f"{path}: {where}: the head has {head.shape[0]} classes but the data has {len(classes)} "
                            f"({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}); give 'classes' in head-row order")
        splits = {s: _mapped(src, size, head.shape[0]) for s, src in sources.items()}
        tasks[str(name)] = Task(str(name), classnames or [str(c) for c in range(head.shape[0])], head, splits, shown_as)
        stats[f"task:{name}"] = [_stat(ft_path), {s: [src.kind, digest(src.fingerprint())] for s, src in sources.items()}]
    zoo_name = str(data.get("name") or path.stem)
    key = f"manifest-{digest(stats)}"
    names = list(finetuned)
    # the task vectors, built once into a mapped file (one fine-tuned model in memory at a time), then
    # mapped on every later load; the fine-tuned weights themselves are read only when used
    vectors = Spec.of("vectors", key, {}, precision="auto").path()
    tv = mapped_task_vectors(vectors, pretrained,
                             [(lambda p=finetuned[n]: load_image_encoder(p)) for n in names], names,
                             [str(finetuned[n]) for n in names], str(pre_path),
                             progress=lambda f, m: progress(0.9 + 0.1 * f, m))
    progress(1.0, "zoo loaded")
    zoo = Zoo(zoo_name, arch, pretrained, LazyCheckpoints(finetuned), tasks, mean, std, key,
              {"manifest": str(path), "folder": None, "vectors": str(vectors)})
    zoo.__dict__["host_task_vectors"] = tv  # the cached property, filled
    return zoo


class LazyCheckpoints(Mapping):
    """``{task: fine-tuned image encoder}`` read from its file each time it is used, never all at once:
    a 20-task ViT-L/14 zoo's 24 GB of weights are not held in memory.  The task vectors (mapped from
    the cache) serve every merge; the weights are read by the few uses that need one model whole
    (its own accuracy, Fisher, RegMean, Surgery)."""

    def __init__(self, paths: dict[str, Path]):
        self._paths = dict(paths)

    def __getitem__(self, name: str):
        return load_image_encoder(self._paths[name])

    def __iter__(self):
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)
