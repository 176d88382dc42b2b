"""Read image-encoder checkpoints in the formats real zoos come in; write safetensors.

Every reader returns a plain ``{name: tensor}`` state dict in open_clip's naming for the
vision tower (the keys of ``open_clip.create_model(...).visual.state_dict()``, e.g.
``conv1.weight``, ``transformer.resblocks.0.attn.in_proj_weight``, ``proj``).

Formats
-------
* safetensors files (``.safetensors``), and Hugging Face model folders holding them;
* torch ``.pt`` / ``.bin`` state dicts, read with ``torch.load(weights_only=True)``;
* whole pickled modules as written by the task_vectors / AdaMerging / TSV code
  (``zeroshot.pt``, ``<Task>/finetuned.pt``: a ``src.modeling.ImageEncoder``; ``head_<Task>.pt``:
  a ``src.heads.ClassificationHead``).  They are read by :class:`RestrictedUnpickler`, which
  never imports the classes named in the file: each becomes an inert stand-in that only
  records its attributes, tensors are rebuilt from the archive's raw storage, and any other
  global (``os.system``, ``builtins.eval``, ...) is refused before anything is called;
* Hugging Face ``CLIPVisionModel`` / ``CLIPModel`` weights, whose keys are mapped to
  open_clip's (q/k/v projections are concatenated into ``in_proj_weight``).

Nothing here calls ``pickle.load`` or ``torch.load(weights_only=False)`` on user files.
"""
from __future__ import annotations

import collections
import json
import os
import pickle
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file as _st_load_file
from safetensors.torch import save_file as _st_save_file

from .errors import CheckpointError

StateDict = dict[str, torch.Tensor]

__all__ = [
    "StateDict",
    "read_state_dict",
    "load_image_encoder",
    "load_head",
    "save_safetensors",
    "to_open_clip_keys",
    "hf_clip_vision_to_open_clip",
    "check_finite",
    "all_finite",
    "in_layout_of",
    "open_clip_to_hf_vision",
    "RestrictedUnpickler",
]

# --------------------------------------------------------------------------------------
# The restricted unpickler for whole-module pickles
# --------------------------------------------------------------------------------------

#: Module prefixes whose classes are rebuilt as inert stand-ins (never imported).
STUB_MODULE_PREFIXES = (
    "src.",  # task_vectors / AdaMerging / TSV: src.modeling.ImageEncoder, src.heads.ClassificationHead
    "modeling",
    "heads",
    "open_clip",
    "torch.nn.modules",
    "torchvision.transforms",
    "timm.",
)
#: Single globals that are rebuilt as inert stand-ins.
STUB_GLOBALS = {("functools", "partial"), ("argparse", "Namespace")}

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}
_DTYPE_NAMES = {
    name: getattr(torch, name)
    for name in (
        "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
    )
}


class StubObject:
    """Stand-in for an instance of a class that the restricted unpickler refused to import."""

    _stub_qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # called for REDUCE(cls, args)
        self.__dict__["_stub_args"] = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            state, slots = state
            state = dict(state or {})
            state.update(slots or {})
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_stub_state"] = state

    def __repr__(self) -> str:
        return f"<stub {self._stub_qualname}>"


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, torch.Tensor):
        raise pickle.UnpicklingError("tensor record does not point at a storage")
    return torch.as_strided(storage, tuple(size), tuple(stride), int(storage_offset))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("parameter record does not hold a tensor")
    return data


def _reconstructor(cls, base, state=None):  # copyreg._reconstructor, protocol 0/1 objects
    if isinstance(cls, type) and issubclass(cls, StubObject):
        obj = cls.__new__(cls)
        if state is not None:
            obj.__dict__["_stub_state"] = state
        return obj
    raise pickle.UnpicklingError(f"refusing copyreg._reconstructor for {cls!r}")


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickle a torch zip archive's ``data.pkl`` without importing or calling foreign code.

    ``storages`` maps a record key to a flat tensor reader (see :func:`_read_torch_zip`).
    """

    def __init__(self, file, storage_reader):
        super().__init__(file)
        self._storage_reader = storage_reader
        self._stub_classes: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        module = "builtins" if module == "__builtin__" else module  # protocol 2 spelling
        key = (module, name)
        if key in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[key]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "torch" and name in _DTYPE_NAMES:
            return _DTYPE_NAMES[name]
        if key in STUB_GLOBALS or any(module == p.rstrip(".") or module.startswith(p) for p in STUB_MODULE_PREFIXES):
            if key not in self._stub_classes:
                self._stub_classes[key] = type(
                    name, (StubObject,), {"_stub_qualname": f"{module}.{name}", "__module__": "tatr_core.stub"}
                )
            return self._stub_classes[key]
        raise pickle.UnpicklingError(
            f"refused global '{module}.{name}': only tensors, torch/open_clip/torchvision module "
            f"state and the task_vectors 'src.*' classes may appear in a checkpoint"
        )

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent record {pid!r}")
        _, storage_type, key, _location, numel = pid[:5]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError("storage record without a storage type")
        return self._storage_reader(str(key), storage_type.dtype, int(numel))


def _read_torch_zip(path: Path) -> Any:
    """Read a ``torch.save`` zip archive through :class:`RestrictedUnpickler`."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if not pkl:
            raise CheckpointError(f"{path}: not a torch checkpoint archive (no data.pkl inside)")
        root = pkl[0].rsplit("/", 1)[0]
        if f"{root}/byteorder" in names and zf.read(f"{root}/byteorder").strip() not in (b"little", b""):
            raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
        cache: dict[str, torch.Tensor] = {}

        def read_storage(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
            if key not in cache:
                raw = bytearray(zf.read(f"{root}/data/{key}"))
                flat = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
                cache[key] = flat.view(dtype) if dtype != torch.uint8 else flat
            return cache[key]

        with zf.open(pkl[0]) as fh:
            return RestrictedUnpickler(fh, read_storage).load()


def _stub_module_state(obj: Any, prefix: str = "", out: StateDict | None = None) -> StateDict:
    """Collect parameters and persistent buffers of a stub ``nn.Module`` tree, like ``state_dict()``."""
    out = {} if out is None else out
    d = obj.__dict__
    skip = d.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, value in (d.get(group) or {}).items():
            if isinstance(value, torch.Tensor) and not (group == "_buffers" and name in skip):
                out[prefix + name] = value
    for name, child in (d.get("_modules") or {}).items():
        if isinstance(child, StubObject):
            _stub_module_state(child, f"{prefix}{name}.", out)
    return out


# --------------------------------------------------------------------------------------
# Generic readers
# --------------------------------------------------------------------------------------

def _tensors_only(obj: Mapping, path: Path) -> StateDict:
    out = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not out:
        raise CheckpointError(f"{path}: holds no tensors (expected a state dict or a pickled module)")
    return out


def _unwrap(obj: Any, path: Path) -> StateDict:
    """Turn what a torch file held into a flat state dict."""
    if isinstance(obj, StubObject):
        if "_parameters" not in obj.__dict__:
            raise CheckpointError(f"{path}: holds a {obj._stub_qualname} object, not a model or a state dict")
        return _stub_module_state(obj)
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model", "module"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                return _tensors_only(inner, path)
            if isinstance(inner, StubObject):
                return _unwrap(inner, path)
        return _tensors_only(obj, path)
    raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a model or a state dict")


def _read_safetensors(path: Path) -> StateDict:
    try:
        return dict(_st_load_file(str(path)))
    except Exception as exc:  # SafetensorError, OSError, ... : unreadable either way
        raise CheckpointError(f"{path}: unreadable safetensors file ({_first_line(exc)}); is it truncated or corrupt?") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _read_torch(path: Path) -> StateDict:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols; we report errors ourselves
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as weights_only_error:
        if not zipfile.is_zipfile(path):
            raise CheckpointError(
                f"{path}: refused to unpickle ({_first_line(weights_only_error)}); "
                "only plain state dicts are read from legacy (non-zip) torch files"
            ) from weights_only_error
    except Exception as exc:  # decoding an untrusted file: any failure means it is unreadable
        raise CheckpointError(f"{path}: unreadable torch file ({_first_line(exc)}); is it truncated or corrupt?") from exc
    else:
        return _unwrap(obj, path)
    # A whole pickled module (task_vectors layout): the restricted unpickler.
    try:
        return _unwrap(_read_torch_zip(path), path)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: {exc}. Refusing to load it; nothing in it was executed") from exc
    except CheckpointError:
        raise
    except Exception as exc:  # decoding an untrusted file: any failure means it is unreadable
        raise CheckpointError(f"{path}: unreadable torch archive ({_first_line(exc)}); is it truncated or corrupt?") from exc


def _read_hf_folder(path: Path) -> StateDict:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = path / index_name
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
                shards = sorted(set(weight_map.values()))
            except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
                raise CheckpointError(f"{index}: malformed shard index ({_first_line(exc)})") from exc
            root = path.resolve()
            out: StateDict = {}
            for shard in shards:
                if not isinstance(shard, str) or not shard:
                    raise CheckpointError(f"{index}: shard name {shard!r} is not a file name")
                target = (path / shard).resolve()
                if os.path.isabs(shard) or not target.is_relative_to(root):
                    raise CheckpointError(f"{index}: shard '{shard}' lies outside the model folder {path}; "
                                          "refusing to read it (shards must be files inside the folder)")
                out.update(read_state_dict(path / shard))
            return out
    for name in ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        if (path / name).exists():
            return read_state_dict(path / name)
    raise CheckpointError(
        f"{path}: folder holds no model weights (looked for model.safetensors, pytorch_model.bin "
        "and their shard indexes)"
    )


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """Read any supported checkpoint into a flat ``{key: tensor}`` dict, keys as stored."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_dir():
        return _read_hf_folder(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: not a regular file or folder (a FIFO, socket or device?); "
                              "give a checkpoint file or a model folder")
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) < 9:
        raise CheckpointError(f"{path}: file is empty or truncated")
    if path.suffix == ".safetensors" or head[8:9] == b"{":
        return _read_safetensors(path)
    return _check_storage_claims(_read_torch(path), path)


#: No single tensor of a checkpoint may claim more than this many bytes (ViT-G's largest is < 1 GiB).
MAX_TENSOR_BYTES = 2**36


def _check_storage_claims(sd: StateDict, path: Path) -> StateDict:
    """Refuse tensors whose shape claims more elements than their storage holds (a stride-0 record
    "of 10¹² elements" would be materialised by the first operation on it), before anything allocates."""
    for key, value in sd.items():
        claimed = value.numel() * value.element_size()
        held = value.untyped_storage().nbytes() - value.storage_offset() * value.element_size()
        if claimed > held or claimed > MAX_TENSOR_BYTES:
            raise CheckpointError(
                f"{path}: key '{key}' claims {tuple(value.shape)} = {value.numel():,} elements "
                f"({claimed:,} bytes) but its storage holds {max(held, 0):,} bytes; the checkpoint is corrupt or hostile")
    return sd


# --------------------------------------------------------------------------------------
# Key layouts
# --------------------------------------------------------------------------------------

#: whole Hugging Face CLIP vision keys (after ``vision_model.``) and their open_clip names
_HF_KEYS = {
    "embeddings.class_embedding": "class_embedding",
    "embeddings.patch_embedding.weight": "conv1.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
}
#: key prefixes renamed as they are
_HF_PREFIXES = {"pre_layrnorm.": "ln_pre.", "post_layernorm.": "ln_post."}
#: per-layer module names (the q / k / v projections are handled apart: open_clip concatenates them)
_HF_LAYER_MAP = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}


def hf_clip_vision_to_open_clip(sd: Mapping[str, torch.Tensor], source: str = "<state dict>") -> StateDict:
    """Map a Hugging Face CLIP vision state dict to open_clip's ``VisionTransformer`` keys.

    Accepts ``CLIPVisionModel`` keys (``vision_model.*``) and ``CLIPModel`` /
    ``CLIPVisionModelWithProjection`` keys (``visual_projection.weight`` becomes ``proj``,
    transposed).  Text-tower keys and the integer ``position_ids`` buffer are dropped.
    """
    pre = "vision_model."
    out: StateDict = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        if key == "visual_projection.weight":
            out["proj"] = value.t().contiguous()
            continue
        if not key.startswith(pre):
            continue
        k = key[len(pre):]
        prefix = next((p for p in _HF_PREFIXES if k.startswith(p)), None)
        if k in _HF_KEYS:
            out[_HF_KEYS[k]] = value
        elif k == "embeddings.position_ids":
            continue
        elif prefix is not None:
            out[_HF_PREFIXES[prefix] + k[len(prefix):]] = value
        elif k.startswith("encoder.layers."):
            _hf_layer(k, key, value, out, qkv, source, "")
        else:
            raise CheckpointError(f"{source}: unknown Hugging Face CLIP key '{key}'")
    _hf_fuse_qkv(qkv, out, source, "")
    if not out:
        raise CheckpointError(f"{source}: no Hugging Face CLIP vision weights found")
    return out


def _hf_layer(k: str, key: str, value: torch.Tensor, out: StateDict, qkv: dict, source: str, tower: str) -> None:
    """One ``encoder.layers.{i}.<rest>`` tensor of a Hugging Face CLIP tower under open_clip's resblock names
    (q / k / v projections gathered in ``qkv`` to be fused into ``in_proj``)."""
    parts = k.split(".")
    i, rest = parts[2], ".".join(parts[3:])
    for proj in ("q_proj", "k_proj", "v_proj"):
        if rest.startswith(f"self_attn.{proj}."):
            qkv.setdefault((i, rest.rsplit(".", 1)[1]), {})[proj] = value
            return
    for hf, oc in _HF_LAYER_MAP.items():
        if rest.startswith(hf + "."):
            out[f"transformer.resblocks.{i}.{oc}.{rest[len(hf) + 1:]}"] = value
            return
    raise CheckpointError(f"{source}: unknown Hugging Face CLIP {tower}key '{key}'")


def _hf_fuse_qkv(qkv: dict, out: StateDict, source: str, tower: str) -> None:
    """open_clip's fused ``in_proj_weight`` / ``in_proj_bias`` from the gathered q, k, v projections."""
    for (i, kind), parts in sorted(qkv.items()):
        missing = {"q_proj", "k_proj", "v_proj"} - set(parts)
        if missing:
            raise CheckpointError(f"{source}: {tower}layer {i} lacks self_attn.{sorted(missing)[0]}.{kind}")
        name = "in_proj_weight" if kind == "weight" else "in_proj_bias"
        out[f"transformer.resblocks.{i}.attn.{name}"] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]], 0)


def hf_clip_text_to_open_clip(sd: Mapping[str, torch.Tensor], source: str = "<state dict>") -> StateDict:
    """The text tower of a Hugging Face ``CLIPModel`` (``text_model.*``, ``text_projection.weight``,
    ``logit_scale``) under open_clip ``CLIP``'s key names, for zero-shot heads; {} when it has none."""
    pre = "text_model."
    if not any(k.startswith(pre) for k in sd):
        return {}
    out: StateDict = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    names = {"embeddings.token_embedding.weight": "token_embedding.weight",
             "embeddings.position_embedding.weight": "positional_embedding"}
    for key, value in sd.items():
        if key == "text_projection.weight":
            out["text_projection"] = value.t().contiguous()
        elif key == "logit_scale":
            out["logit_scale"] = value
        elif key.startswith(pre):
            k = key[len(pre):]
            if k in names:
                out[names[k]] = value
            elif k == "embeddings.position_ids":
                continue
            elif k.startswith("final_layer_norm."):
                out["ln_final." + k[len("final_layer_norm."):]] = value
            elif k.startswith("encoder.layers."):
                _hf_layer(k, key, value, out, qkv, source, "text ")
            else:
                raise CheckpointError(f"{source}: unknown Hugging Face CLIP text key '{key}'")
    _hf_fuse_qkv(qkv, out, source, "text ")
    return out


def text_tower(sd: Mapping[str, torch.Tensor], source: str = "<state dict>") -> StateDict:
    """The text tower of a whole CLIP checkpoint under open_clip ``CLIP`` key names (Hugging Face ``CLIPModel``
    keys mapped; open_clip keys kept), or {} when the checkpoint holds none (a bare vision tower)."""
    hf = hf_clip_text_to_open_clip(sd, source)
    if hf:
        return hf
    if "token_embedding.weight" not in sd:  # a vision tower alone (its transformer.* keys are the image's)
        return {}
    return {k: v for k, v in sd.items() if k.startswith(("token_embedding.", "positional_embedding", "transformer.",
                                                         "ln_final.", "text_projection", "logit_scale"))}


def to_open_clip_keys(sd: Mapping[str, torch.Tensor], source: str = "<state dict>") -> StateDict:
    """Bring a state dict of any supported layout to open_clip's vision-tower key names.

    * ``module.`` prefixes (DataParallel) are removed;
    * Hugging Face CLIP keys are remapped (``vision_model.*`` as in the public fine-tuned
      checkpoints, or unprefixed ``embeddings.*`` / ``encoder.*`` as transformers 5 saves them);
    * a task_vectors ``ImageEncoder`` (``model.visual.*``) or a whole open_clip ``CLIP``
      (``visual.*``) keeps only its vision tower;
    * anything else is taken as already being a vision-tower state dict.
    """
    sd = dict(sd)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    if "embeddings.patch_embedding.weight" in sd:  # CLIPVisionModel as saved by transformers ≥ 5
        sd = {f"vision_model.{k}": v for k, v in sd.items()}
    if any(k.startswith("vision_model.") for k in sd):
        return hf_clip_vision_to_open_clip(sd, source)
    for prefix in ("model.visual.", "image_encoder.model.visual.", "visual."):
        if any(k.startswith(prefix) for k in sd):
            return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


def open_clip_to_hf_vision(vision: Mapping[str, torch.Tensor], prefix: str = "vision_model.") -> StateDict:
    """The inverse of :func:`hf_clip_vision_to_open_clip`: open_clip vision-tower keys to Hugging Face
    CLIP keys (``in_proj`` split into q / k / v, ``proj`` transposed into ``visual_projection.weight``)."""
    layer_map = {oc: hf for hf, oc in _HF_LAYER_MAP.items()}
    keys = {oc: hf for hf, oc in _HF_KEYS.items()}
    prefixes = {oc: hf for hf, oc in _HF_PREFIXES.items()}
    out: StateDict = {}
    for key, value in vision.items():
        renamed = next((p for p in prefixes if key.startswith(p)), None)
        if key == "proj":
            out["visual_projection.weight"] = value.t().contiguous()
        elif key in keys:
            out[prefix + keys[key]] = value
        elif renamed is not None:
            out[prefix + prefixes[renamed] + key[len(renamed):]] = value
        elif key.startswith("transformer.resblocks."):
            parts = key.split(".")
            i, rest = parts[2], ".".join(parts[3:])
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = rest.rsplit("_", 1)[1]
                for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, 0)):
                    out[f"{prefix}encoder.layers.{i}.self_attn.{name}.{kind}"] = part.contiguous()
                continue
            for oc, hf in layer_map.items():
                if rest.startswith(oc + "."):
                    out[f"{prefix}encoder.layers.{i}.{hf}.{rest[len(oc) + 1:]}"] = value
                    break
            else:
                raise CheckpointError(f"open_clip key '{key}' has no Hugging Face CLIP counterpart")
        else:
            raise CheckpointError(f"open_clip key '{key}' has no Hugging Face CLIP counterpart")
    return out


def in_layout_of(vision: Mapping[str, torch.Tensor], raw: Mapping[str, torch.Tensor]) -> StateDict:
    """``vision`` (open_clip vision-tower keys) written in the layout ``raw`` was stored in.

    ``raw`` is a checkpoint as read (:func:`read_state_dict`): a bare vision tower, a whole open_clip
    CLIP (``visual.*``), a task_vectors ``ImageEncoder`` (``model.visual.*``), a Hugging Face
    ``CLIPVisionModel`` / ``CLIPModel``, any of them ``module.``-prefixed.  Its vision tensors are
    replaced (in their own dtypes); everything else it holds (a CLIP's text tower, ``logit_scale``)
    is kept, so the result loads back into the model the inputs came from.
    """
    raw = dict(raw)
    wrapped = bool(raw) and all(k.startswith("module.") for k in raw)
    if wrapped:
        raw = {k[len("module."):]: v for k, v in raw.items()}
    if "embeddings.patch_embedding.weight" in raw or any(k.startswith("vision_model.") for k in raw):
        prefix = "" if "embeddings.patch_embedding.weight" in raw else "vision_model."
        renamed = open_clip_to_hf_vision(vision, prefix)
    else:
        prefix = next((p for p in ("image_encoder.model.visual.", "model.visual.", "visual.")
                       if any(k.startswith(p) for k in raw)), "")
        renamed = {prefix + k: v for k, v in vision.items()}
    out = dict(raw)
    for key, value in renamed.items():
        if key in raw:
            out[key] = value.to(raw[key].dtype)
        elif not prefix and key in vision:  # a bare vision tower: the merged tensors are the checkpoint
            out[key] = value
    return {f"module.{k}": v for k, v in out.items()} if wrapped else out


def all_finite(x: torch.Tensor) -> bool:
    """Whether a floating tensor holds no NaN or Inf: its min and max (NaN propagates through both, an
    infinity is one of them) in one pass, about 25× faster than ``isfinite(x).all()``."""
    if x.numel() == 0:
        return True
    low, high = torch.aminmax(x.detach().reshape(-1))
    return bool(torch.isfinite(low)) and bool(torch.isfinite(high))


def check_finite(sd: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointError` naming the first floating tensor with NaN or Inf values."""
    for key, value in sd.items():
        if value.is_floating_point() and not all_finite(value):
            bad = "NaN" if bool(torch.isnan(value).any()) else "Inf"
            raise CheckpointError(f"{source}: key '{key}' contains {bad} values; the checkpoint is corrupt")


def load_image_encoder(path: str | os.PathLike, raw: Mapping[str, torch.Tensor] | None = None) -> StateDict:
    """Read an image encoder from any supported file into open_clip vision-tower keys, checked finite.

    ``raw``: the file's state dict as :func:`read_state_dict` already read it (not read again)."""
    sd = to_open_clip_keys(read_state_dict(path) if raw is None else raw, str(path))
    check_finite(sd, str(path))
    return sd


def load_head(path: str | os.PathLike) -> StateDict:
    """Read a classification head (``head_<Task>.pt`` or a ``{weight[, bias]}`` file).

    Returns ``{"weight": [classes, dim]}`` plus ``"bias"`` when present.
    """
    sd = read_state_dict(path)
    weight = [k for k in sd if k == "weight" or k.endswith(".weight")]
    if len(weight) != 1 or sd[weight[0]].ndim != 2:
        raise CheckpointError(f"{path}: expected one 2-D 'weight' tensor in a classification head, found {sorted(sd)}")
    prefix = weight[0][: -len("weight")]
    out = {"weight": sd[weight[0]]}
    if prefix + "bias" in sd:
        out["bias"] = sd[prefix + "bias"]
    check_finite(out, str(path))
    return out


def save_safetensors(sd: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write a state dict to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in sd.items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        _st_save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
