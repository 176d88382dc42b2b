"""Real zoos described by a manifest (YAML or JSON).  Paths are relative to the manifest file.

.. code-block:: yaml

    name: task_vectors ViT-B/32          # optional (default: the file name)
    arch: ViT-B-32                       # an open_clip architecture (ViT-B-32-quickgelu for OpenAI/HF weights)
    pretrained: checkpoints/ViT-B-32/zeroshot.pt
    clip: clip/ViT-B-32-openai.pt        # optional: open_clip CLIP weights with the text tower,
                                         # needed only for heads built from class names
    image_size: 224                      # optional (default: the architecture's)
    mean: [0.48145466, 0.4578275, 0.40821073]   # optional (default: OpenAI CLIP's)
    std: [0.26862954, 0.26130258, 0.27577711]
    tasks:
      MNIST:
        finetuned: checkpoints/ViT-B-32/MNIST/finetuned.pt
        head: checkpoints/ViT-B-32/head_MNIST.pt   # or classnames + templates through `clip`
        data: data/MNIST                 # image folders <data>/<split>/<class>/*.png|jpg
        classes: ["0", "1", ...]         # optional: class folders in head-row order (default: sorted)
        classnames: ["0", "1", ...]      # optional: names for prompts and display (default: the folders)
        templates: ["a photo of the number: \"{}\"."]

Every problem (unreadable manifest, a missing field or file, a head whose class count does
not match the data, an unknown key) raises :class:`TatrError` naming the file and the fix.  A manifest
is read within stated limits, checked before anything is built from it (:data:`MAX_MANIFEST_BYTES`,
:data:`MAX_DEPTH`, no YAML aliases), and a task name must be a plain name (it becomes part of file
names: :func:`tatr_core.paths.safe_name`).
Images are resized (shorter side, bicubic) and centre-cropped as open_clip's evaluation
transform does, then cached as uint8 tensors under ``cache/data/``.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..cache import digest, load_tensors, store_tensors
from ..checkpoints import load_head, load_image_encoder, read_state_dict
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
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
TOP_KEYS = {"name", "arch", "pretrained", "clip", "image_size", "mean", "std", "tasks"}
TASK_KEYS = {"finetuned", "head", "data", "classes", "classnames", "templates", "splits"}
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
    for key in ("pretrained", "clip"):
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
        for key in ("finetuned", "head", "data"):
            _path_field(t.get(key), f"{where}.{key}", path)
        for key in ("classes", "classnames"):
            _name_list(t.get(key), f"{where}.{key}", path)
        templates = t.get("templates")
        if templates is not None and (not isinstance(templates, list) or not templates
                                      or not all(isinstance(x, str) and "{}" in x for x in templates)):
            raise TatrError(f"{path}: '{where}.templates' must be a list of prompts each containing {{}}, got {shown(templates)}")
        splits = t.get("splits")
        if splits is not None:
            if not isinstance(splits, dict) or not all(k in ("train", "val", "test") and isinstance(v, str) and v
                                                       for k, v in splits.items()):
                raise TatrError(f"{path}: '{where}.splits' must map train / val / test to folder names, got {shown(splits)}")


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


def _load_image(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        scale = size / min(w, h)
        im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
        w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        return np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8).transpose(2, 0, 1)


def _load_split(folder: Path, classes: list[str], size: int, manifest: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of ``<folder>/<class>/*`` as uint8 (n, 3, size, size), cached by content."""
    cached = Spec.of("data", "", {"stat": _stat(folder), "classes": classes, "size": size}, precision="auto").path()
    sd = load_tensors(cached)
    if sd is not None and {"images", "labels"} <= set(sd):
        return sd["images"], sd["labels"]
    images, labels = [], []
    for c, name in enumerate(classes):
        d = folder / name
        if not d.is_dir():
            raise TatrError(f"{manifest}: class folder '{d}' is missing (expected one folder per class)")
        for f in sorted(d.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                try:
                    images.append(_load_image(f, size))
                except Exception as exc:
                    raise TatrError(f"{f}: not a readable image ({exc})") from exc
                labels.append(c)
    if not images:
        raise TatrError(f"{manifest}: no images under {folder}")
    out = torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64)
    store_tensors(cached, {"images": out[0], "labels": out[1]})
    return out


def load(path: Path, progress: Progress = no_progress) -> Zoo:
    from ..models import create_clip, open_clip_module, tokenizer, zero_shot_head

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
    cfg = open_clip.get_model_config(arch) or {}
    size = int(data.get("image_size") or cfg.get("vision_cfg", {}).get("image_size", 224))
    mean = tuple(float(x) for x in data.get("mean") or OPENAI_MEAN)
    std = tuple(float(x) for x in data.get("std") or OPENAI_STD)
    pre_path = _file(base, _require(data, "pretrained", "the zoo", path), "pretrained checkpoint", path)
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
        ft_path = _file(base, _require(t, "finetuned", where, path), f"{where}: fine-tuned checkpoint", path)
        finetuned[str(name)] = ft_path
        data_dir = _file(base, _require(t, "data", where, path), f"{where}: data folder", path)
        split_names = {"train": "train", "val": "val", "test": "test", **(t.get("splits") or {})}
        present = {s: data_dir / folder for s, folder in split_names.items() if (data_dir / folder).is_dir()}
        if "test" not in present:
            raise TatrError(f"{path}: {where}: no test split at {data_dir / split_names['test']} (expected <data>/test/<class>/*)")
        classes = [str(c) for c in t.get("classes") or sorted(p.name for p in present["test"].iterdir() if p.is_dir())]
        classnames = [str(c) for c in t.get("classnames") or classes]
        if len(classnames) != len(classes):
            raise TatrError(f"{path}: {where}: {len(classnames)} classnames for {len(classes)} classes")
        if t.get("head"):
            head_path = _file(base, t["head"], f"{where}: head", path)
            head = load_head(head_path)["weight"].float()
            stats[f"head:{name}"] = _stat(head_path)
        else:
            if clip_model is None:
                clip_path = _file(base, _require(data, "clip", f"{where} has no head file, so the zoo", path),
                                  "CLIP checkpoint", path)
                clip_model = create_clip(arch)
                clip_sd = read_state_dict(clip_path)
                missing, _ = clip_model.load_state_dict(clip_sd, strict=False)
                text_missing = [k for k in missing if not k.startswith("visual.")]
                if text_missing:
                    raise TatrError(f"{clip_path}: lacks the text tower key '{text_missing[0]}'; "
                                    "'clip' must be open_clip CLIP weights with the text tower")
                tok = tokenizer(arch)
                stats["clip"] = _stat(clip_path)
            head = zero_shot_head(clip_model, tok, classnames, t.get("templates") or DEFAULT_TEMPLATES)
        if head.shape[0] != len(classes):
            raise TatrError(f"{path}: {where}: the head has {head.shape[0]} classes but the data has {len(classes)} "
                            f"({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}); give 'classes' in head-row order")
        splits = {s: _load_split(folder, classes, size, path) for s, folder in present.items()}
        tasks[str(name)] = Task(str(name), classnames, head, splits, f"{data_dir}")
        stats[f"task:{name}"] = [_stat(ft_path), _stat(data_dir)]
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
