"""Models and datasets from the local Hugging Face caches, offline (no network is ever used).

* ``hf:org/name`` (optionally ``@revision``) names a repository in the hub cache (``HF_HUB_CACHE``, else
  ``HF_HOME/hub``, else the folder a manifest's ``hf_cache`` or ``zoo init --hf-cache`` gives), found with
  ``huggingface_hub.snapshot_download(..., local_files_only=True)``.  A model is a ``CLIPModel`` or
  ``CLIPVisionModel`` folder (safetensors or bin).
* A dataset is read from either layout a user's cache holds: the hub cache's raw files
  (``datasets--org--name/snapshots/<rev>/.../<split>-*.parquet``), or the ``datasets`` library's prepared
  Arrow cache (``HF_DATASETS_CACHE``, else ``HF_HOME/datasets``: ``org___name/<config>/<version>/<hash>/
  *-<split>*.arrow``), which is what ``datasets.load_dataset`` leaves behind (and the only layout it reads
  offline).  A folder given by path may hold parquet files, or be a ``save_to_disk`` folder.

What is not in the cache is an error naming the id and the command that fetches it on a machine with
access; a half-downloaded revision (a file whose blob is missing or still ``.incomplete``) is an error too.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..errors import TatrError, shown

PREFIX = "hf:"
SPLIT_NAMES = {"train": "train", "test": "test", "validation": "val", "valid": "val", "val": "val", "dev": "val"}
_SHARD = re.compile(r"^(?P<split>[A-Za-z_]+?)(?:[-_]\d{5}-of-\d{5}|[-_]\d+)?$")


class NotCached(TatrError):
    """A repository that is not in the local cache at all."""


class HalfDownloaded(TatrError):
    """A repository whose snapshot points at blobs that are missing or still downloading."""


def is_hub_id(value) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def parse_id(value: str) -> tuple[str, str | None]:
    """``hf:org/name@rev`` → (``org/name``, ``rev``); a malformed id is an error."""
    text = value[len(PREFIX):]
    repo, _, revision = text.partition("@")
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", repo) or ".." in repo:
        raise TatrError(f"{shown(value)} is not a Hugging Face id: write hf:org/name (optionally @revision)")
    return repo, revision or None


def hub_cache(given: str | os.PathLike | None = None) -> Path:
    """The hub cache folder: the one given, else huggingface_hub's (HF_HUB_CACHE / HF_HOME)."""
    if given:
        return Path(given).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def datasets_cache(hub: Path) -> list[Path]:
    """Where the ``datasets`` library's prepared caches may be: HF_DATASETS_CACHE, HF_HOME/datasets, and
    ``datasets`` beside the hub cache given."""
    from huggingface_hub import constants

    out = [Path(p) for p in (os.environ.get("HF_DATASETS_CACHE"), Path(constants.HF_HOME) / "datasets") if p]
    out.append(hub.parent / "datasets")
    return list(dict.fromkeys(p.expanduser() for p in out))


def fetch_command(repo: str, dataset: bool) -> str:
    return f"hf download {repo}{' --repo-type dataset' if dataset else ''}"


def snapshot(value: str, cache: Path, dataset: bool = False) -> Path:
    """The local snapshot folder of ``hf:org/name[@rev]`` in ``cache``; not there, or half there: an error."""
    from huggingface_hub import snapshot_download

    repo, revision = parse_id(value)
    what = "dataset" if dataset else "model"
    try:
        folder = Path(snapshot_download(repo, repo_type="dataset" if dataset else "model", revision=revision,
                                        cache_dir=str(cache), local_files_only=True))
    except Exception as exc:  # LocalEntryNotFoundError, or a cache folder that is not one
        raise NotCached(f"{what} '{repo}'{f' (revision {revision})' if revision else ''} is not in the Hugging Face "
                        f"cache at {cache} ({type(exc).__name__}); no network is used: on a machine with access run "
                        f"`{fetch_command(repo, dataset)}` with HF_HUB_CACHE pointing at a folder, then copy that folder "
                        "here (or name it with hf_cache / --hf-cache)") from None
    check_complete(folder, repo, dataset)
    return folder


def check_complete(folder: Path, repo: str, dataset: bool) -> None:
    """A snapshot whose files all point at complete blobs; else an error naming the first missing one."""
    blobs = folder.parent.parent / "blobs"
    partial = sorted(blobs.glob("*.incomplete")) if blobs.is_dir() else []
    broken = [p for p in folder.rglob("*") if p.is_symlink() and not p.exists()]
    if broken or partial:
        name = broken[0].relative_to(folder) if broken else partial[0].name
        raise HalfDownloaded(f"{'dataset' if dataset else 'model'} '{repo}' is half downloaded in {folder} ({name} is "
                        f"missing or incomplete); run `{fetch_command(repo, dataset)}` again to finish it")


def model_folder(value: str, cache: Path) -> Path:
    """A Hugging Face CLIP model's snapshot folder (it must hold safetensors or bin weights)."""
    folder = snapshot(value, cache)
    if not any((folder / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")) and \
            not list(folder.glob("model-*.safetensors")) and not list(folder.glob("pytorch_model-*.bin")):
        raise TatrError(f"model '{parse_id(value)[0]}' in {folder} has no weights (model.safetensors or "
                        "pytorch_model.bin); download it again")
    return folder


# ----------------------------------------------------------------------------------------- dataset splits
def _split_of(stem: str, parent: str) -> str | None:
    m = _SHARD.match(stem)
    if m and m.group("split").lower() in SPLIT_NAMES:
        return m.group("split").lower()
    if re.fullmatch(r"\d+", stem) and parent.lower() in SPLIT_NAMES:  # refs/convert/parquet: <config>/<split>/0000.parquet
        return parent.lower()
    return None


def parquet_splits(folder: Path, config: str | None, repo: str) -> dict[str, list[Path]]:
    """{split name as the files give it: parquet files} of a dataset folder, for ``config`` (its
    subfolder; without one: ``data/``, the folder itself, or the only config)."""
    by_config: dict[str, dict[str, list[Path]]] = {}
    for f in sorted(folder.rglob("*.parquet")):
        rel = f.relative_to(folder).parts
        split = _split_of(f.stem, f.parent.name)
        if split is None:
            continue
        top = rel[0] if len(rel) > 1 else ""
        cfg = "" if top in ("data", "") or top.lower() in SPLIT_NAMES else top
        by_config.setdefault(cfg, {}).setdefault(split, []).append(f)
    if not by_config:
        return {}
    if config:
        if config not in by_config and not (config == "default" and "" in by_config):
            raise TatrError(f"dataset '{repo}' has no config {shown(config)} in {folder} (it has "
                            f"{', '.join(sorted(c or 'default' for c in by_config))})")
        return by_config.get(config, by_config.get("", {}))
    if "" in by_config:
        return by_config[""]
    if len(by_config) == 1:
        return next(iter(by_config.values()))
    raise TatrError(f"dataset '{repo}' has several configs ({', '.join(sorted(by_config))}); name one with 'config'")


def prepared_splits(repo: str, config: str | None, roots: list[Path]) -> tuple[dict[str, list[Path]], dict, Path] | None:
    """The ``datasets`` library's prepared Arrow cache of ``repo``: ({split: shards}, features, folder), the most
    recent complete one, or None."""
    org, _, name = repo.rpartition("/")
    names = [f"{org}___{name}"] if org else []
    names.append(name)
    found = []
    for root in roots:
        for dirname in names:
            base = root / dirname
            if not base.is_dir():
                continue
            for info in base.glob("*/*/*/dataset_info.json"):
                cfg_dir = info.parent.parent.parent.name
                cfg = cfg_dir.rsplit("-", 1)[0] if re.search(r"-[0-9a-f]{16}$", cfg_dir) else cfg_dir
                if config and cfg != config:
                    continue
                found.append((info.stat().st_mtime_ns, info))
    for _, info in sorted(found, reverse=True):
        try:
            meta = json.loads(info.read_text())
        except (OSError, ValueError):
            continue
        splits: dict[str, list[Path]] = {}
        for f in sorted(info.parent.glob("*.arrow")):
            stem = f.stem
            for split in (meta.get("splits") or {}):
                if re.search(rf"-{re.escape(split)}(-\d{{5}}-of-\d{{5}})?$", stem):
                    splits.setdefault(split.lower(), []).append(f)
        expected = {s.lower() for s in (meta.get("splits") or {})}
        if splits and expected <= set(splits):
            return splits, meta.get("features") or {}, info.parent
    return None


def saved_splits(folder: Path) -> tuple[dict[str, list[Path]], dict]:
    """A ``save_to_disk`` folder (a DatasetDict: ``dataset_dict.json`` and a folder per split; or one Dataset):
    ({split: Arrow files}, features)."""
    def one(d: Path) -> tuple[list[Path], dict]:
        try:
            state = json.loads((d / "state.json").read_text())
            info = json.loads((d / "dataset_info.json").read_text()) if (d / "dataset_info.json").is_file() else {}
        except (OSError, ValueError) as exc:
            raise TatrError(f"{d}: not a readable save_to_disk folder ({exc}); save the dataset again") from None
        files = [d / f["filename"] for f in state.get("_data_files", [])]
        missing = [f for f in files if not f.is_file()]
        if missing or not files:
            raise TatrError(f"{d}: the saved dataset lacks {missing[0].name if missing else 'its data files'}; save it again")
        return files, info.get("features") or {}

    if (folder / "dataset_dict.json").is_file():
        try:
            names = json.loads((folder / "dataset_dict.json").read_text())["splits"]
        except (OSError, ValueError, KeyError) as exc:
            raise TatrError(f"{folder}: a broken dataset_dict.json ({exc}); save the dataset again") from None
        out, features = {}, {}
        for split in names:
            out[split.lower()], feats = one(folder / split)
            features = features or feats
        return out, features
    files, features = one(folder)
    return {"train": files}, features
