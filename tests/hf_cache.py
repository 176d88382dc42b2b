"""Small Hugging Face caches written in exactly the layouts a user's machine holds, with the real libraries.

* the hub cache: ``<cache>/{models,datasets}--org--name/{blobs/<sha256>, snapshots/<rev>/<file> -> blob,
  refs/main}``, as ``huggingface_hub`` downloads leave it (read back here with
  ``snapshot_download(..., local_files_only=True)``);
* model files written by ``transformers`` (``CLIPModel.save_pretrained``: config.json, model.safetensors);
* dataset files written by ``datasets`` (an ``Image`` and a ``ClassLabel`` feature; ``to_parquet`` for the hub's
  ``data/<split>-00000-of-00001.parquet``, ``save_to_disk``, and the prepared Arrow cache that
  ``load_dataset`` leaves behind, made by the same builder).
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
from pathlib import Path

import numpy as np

MICRO = dict(image_size=32, patch_size=8, width=64, layers=2, heads=2, mlp=128, embed=32,
             text_width=64, text_heads=2, text_layers=1, text_mlp=256, context=20)


def write_repo(cache: Path, repo_id: str, files: dict[str, bytes | Path], dataset: bool = False,
               revision: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """A repository in the hub cache's layout; returns its snapshot folder."""
    kind = "datasets" if dataset else "models"
    root = cache / f"{kind}--{repo_id.replace('/', '--')}"
    snap = root / "snapshots" / revision
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(revision)
    for rel, content in files.items():
        data = Path(content).read_bytes() if isinstance(content, Path) else content
        sha = hashlib.sha256(data).hexdigest()
        (root / "blobs" / sha).write_bytes(data)
        target = snap / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            target.unlink()
        os.symlink(os.path.relpath(root / "blobs" / sha, target.parent), target)
    return snap


def clip_model(seed: int = 0, text: bool = True):
    """A micro CLIPModel (the TATR-micro-ViT shapes; GELU as open_clip's micro architecture uses)."""
    import torch
    import transformers

    m = MICRO
    vision = dict(hidden_size=m["width"], intermediate_size=m["mlp"], num_hidden_layers=m["layers"],
                  num_attention_heads=m["heads"], image_size=m["image_size"], patch_size=m["patch_size"],
                  hidden_act="gelu", layer_norm_eps=1e-5)
    torch.manual_seed(seed)
    if not text:
        return transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**vision)).eval()
    text_cfg = dict(hidden_size=m["text_width"], intermediate_size=m["text_mlp"], num_hidden_layers=m["text_layers"],
                    num_attention_heads=m["text_heads"], max_position_embeddings=m["context"], vocab_size=49408,
                    hidden_act="gelu", layer_norm_eps=1e-5, eos_token_id=49407, bos_token_id=49406, pad_token_id=0)
    cfg = transformers.CLIPConfig(text_config=text_cfg, vision_config=vision, projection_dim=m["embed"])
    return transformers.CLIPModel(cfg).eval()


def model_files(model, folder: Path) -> dict[str, Path]:
    model.save_pretrained(folder)
    return {f.name: f for f in folder.iterdir() if f.is_file()}


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def hf_dataset(images: dict[str, list[np.ndarray]], labels: dict[str, list[int]], classnames: list[str]):
    """A DatasetDict with an Image and a ClassLabel column, one split per key."""
    import datasets
    from PIL import Image

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=classnames)})
    return datasets.DatasetDict({
        split: datasets.Dataset.from_dict({"image": [Image.fromarray(x) for x in images[split]], "label": labels[split]},
                                          features=features)
        for split in images})


def parquet_files(dd, folder: Path, config: str | None = None) -> dict[str, Path]:
    """The hub's raw layout of a dataset: ``[<config>/]data/<split>-00000-of-00001.parquet``."""
    out = {}
    for split, ds in dd.items():
        rel = f"{config + '/' if config else 'data/'}{split}-00000-of-00001.parquet"
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(path))
        out[rel] = path
    return out


def prepared_cache(parquet: dict[str, Path], datasets_cache: Path, repo_id: str, config: str = "default") -> None:
    """The Arrow cache ``datasets.load_dataset`` leaves for ``repo_id``, made by the same parquet builder it uses."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    by_split = {Path(rel).name.split("-")[0]: [str(p)] for rel, p in parquet.items()}
    builder = Parquet(cache_dir=str(datasets_cache), dataset_name=repo_id.replace("/", "___"), config_name=config,
                      hash="0123456789abcdef", data_files=by_split)
    builder.download_and_prepare()


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True)
