"""The built-in zoos, built here on the CPU with the task_vectors protocol.

1. **Pretrain** a whole tiny open_clip CLIP contrastively on captioned images from a broad
   mixture: every task's training images, captioned from its class names through many
   prompt templates (the task's own and generic ones), for a short schedule.  Items that share
   a caption are not treated as negatives of each other (multi-positive InfoNCE).
2. **Zero-shot heads**: per task, class-name prompts through the text tower (``models.zero_shot_head``).
3. **Fine-tune** only the image tower on each task, its head frozen, with cross-entropy.

Everything is seeded; the result is cached under ``cache/zoos/<preset>-<hash of the recipe>/``
and rebuilt only when the recipe (or :data:`BUILD_VERSION`) changes.

**Sealed.**  A zoo's record (``zoo.json``) holds the SHA-256 of every file of the zoo and of its own
content (:func:`seal`).  The build shipped with the code is checked before it is installed: a damaged
or edited file is refused with the fix, and nothing is copied.  The installed copy in the cache is
checked the first time a process loads it: a damaged one is installed again, with a notice.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..cache import cache_dir, content_hash, digest, notice, publish_dir, read_json, write_json_atomic
from ..checkpoints import read_state_dict, save_safetensors
from ..data.mini import GENERIC, SPLITS, TASKS, generate_task, load_task, save_task, task_file
from ..errors import TatrError
from ..models import (OPENAI_MEAN, OPENAI_STD, channel_stats, create_clip, head_logits, model_config, normalise,
                      open_clip_module, tokenizer, zero_shot_head)
from .base import Progress, Task, Zoo, no_progress

#: Bump when the build code changes in a way that changes the models.
BUILD_VERSION = 1


@dataclass(frozen=True)
class Recipe:
    arch: str
    tasks: tuple[str, ...]
    sizes: dict = field(default_factory=dict)  #: images per split
    seed: int = 0
    pretrain_steps: int = 400
    pretrain_batch: int = 256
    pretrain_lr: float = 1e-3
    pretrain_per_task: int = 300  #: training images per task in the pretraining mixture
    #: per task, the fraction of pretraining captions that name the class; the others name only the
    #: domain ("a handwritten digit"). Tasks not listed use 0.3.
    class_caption_rate: dict = field(default_factory=dict)
    #: per task, the fraction of pretraining captions that name the class by its alias (the word web
    #: captions use, ``TaskSpec.aliases``: "seven", "crimson"), not by the zero-shot prompts' name.
    #: They teach the image tower the task's features without teaching the zero-shot head's words,
    #: as web data teaches CLIP features that its zero-shot prompts then only partly reach.
    alias_caption_rate: dict = field(default_factory=dict)
    finetune_steps: int = 150
    finetune_batch: int = 128
    finetune_lr: float = 5e-4
    weight_decay: float = 0.1
    #: which image-tower parameters fine-tuning moves (:data:`FINETUNED`): all of them, only the attention
    #: blocks' weight matrices (Jin et al., 2025: task vectors that disturb each other less), only the MLPs,
    #: or every transformer block (the mini zoo: the embeddings, ln_pre, ln_post and proj stay at θ_pre)
    finetune_params: str = "all"
    #: fine-tune the image tower's first-order Taylor expansion at θ_pre instead of the network itself
    #: (Ortiz-Jiménez et al., 2023); the task vectors are then used by the ordinary network, as every zoo's are
    finetune_linear: bool = False
    #: the zero-shot heads' logit scale: ``"clip"``, real CLIP's learned 100 (:data:`~tatr_core.models.HEAD_LOGIT_SCALE`),
    #: or ``"learned"``, the scale this CLIP learned in its own pretraining (task_vectors multiplies the heads by
    #: ``model.logit_scale.exp()``, which is 100 for every real CLIP); it sets how confident the heads' predictions are
    head_scale: str = "clip"

    def head_scale_of(self, model) -> float | None:
        """The zero-shot heads' logit scale for ``model`` (None: the default, real CLIP's)."""
        if self.head_scale == "clip":
            return None
        if self.head_scale == "learned":
            return float(model.logit_scale.detach().exp().clamp(max=100))
        raise TatrError(f"head_scale {self.head_scale!r}: use 'clip' (real CLIP's 100) or 'learned' (the model's own)")

    def as_dict(self) -> dict:
        config = model_config(self.arch)
        fields = {k: v for k, v in asdict(self).items() if LATER_FIELDS.get(k, object()) != v}
        return {**fields, "build_version": BUILD_VERSION, "model_config": config}


#: recipe fields added after zoos were built, and their defaults: a recipe at these defaults keeps the key
#: it had before the field existed (so the shipped build still matches its recipe)
LATER_FIELDS = {"finetune_params": "all", "finetune_linear": False, "head_scale": "clip"}

#: what ``Recipe.finetune_params`` may name: which parameters of the image tower move in fine-tuning
FINETUNED = {
    "all": lambda name: True,
    "attn": lambda name: ".attn." in name and name.endswith("weight"),
    "mlp": lambda name: ".mlp." in name,
    "blocks": lambda name: "resblocks" in name,
}


PRESETS = {
    "mini": Recipe(
        arch="TATR-mini-ViT",
        tasks=("mnist", "digits", "textures", "letters", "shapes", "colours", "counts", "orientations"),
        sizes={"train": 2000, "val": 200, "test": 500},
        # 2000 steps, not 500: the longer pretraining is what lets task vectors add up (issue 27's study:
        # Task Arithmetic's share of the gap 5% -> 34%, weight-disentanglement error 0.70 -> 0.44)
        pretrain_steps=2000, pretrain_batch=256, pretrain_per_task=2000,
        # Web captions name digits, letters and simple shapes now and then, textures, colour names of
        # blobs and stripe orientations hardly ever: those tasks start near chance zero-shot. Letters named
        # in 10% of their captions give AdaMerging's entropy a signal to follow (issue 27's study: without it
        # the merged model answers letters at chance yet confidently, and AdaMerging drops letters' vector;
        # with it TW / LW AdaMerging 70.8 / 72.6 beat Task Arithmetic's 69.0).
        class_caption_rate={"mnist": 0.1, "digits": 0.1, "letters": 0.1, "shapes": 0.1, "counts": 0.1,
                            "textures": 0.0, "colours": 0.0, "orientations": 0.0},
        # Half the captions name the class in other words ("seven", "crimson", "upright"): the image
        # tower learns every task's features, which the zero-shot prompts' words only partly reach.
        alias_caption_rate={name: 0.5 for name in ("mnist", "digits", "textures", "letters", "shapes", "colours",
                                                   "counts", "orientations")},
        # Only the transformer blocks move in fine-tuning: the patch and position embeddings, the first and
        # last LayerNorms and the output projection, which every task's features pass through, stay at θ_pre
        # (issue 27's study: 34% -> 48% of the gap).
        finetune_lr=2e-4, finetune_steps=150, finetune_params="blocks",
        # The heads at the logit scale this CLIP learned (24.8), as task_vectors scales them by the model's own
        # logit_scale.exp(), not at real CLIP's 100: predictions as confident as the model is, and task vectors
        # that add up further (issue 27's study: 48% -> 64% of the gap, ξ 0.33 -> 0.22)
        head_scale="learned",
    ),
    "micro": Recipe(
        arch="TATR-micro-ViT",
        tasks=("mnist", "textures", "shapes", "colours"),
        sizes={"train": 300, "val": 60, "test": 120},
        pretrain_steps=120, pretrain_batch=128, pretrain_lr=2e-3,
        finetune_steps=40, finetune_batch=64, finetune_lr=1e-3, pretrain_per_task=300,
        class_caption_rate={"mnist": 0.5, "shapes": 0.5, "textures": 0.0, "colours": 0.0},
    ),
}


#: Web-style captions that name what kind of image it is but not its class (most web captions are
#: like this: they say "a handwritten note", rarely which digit it shows).
COARSE_TEMPLATES = ("a photo of a {}.", "an image of a {}.", "a small {}.", "a {}.")


def _cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _normalise(images_uint8: torch.Tensor) -> torch.Tensor:
    return normalise(images_uint8, *channel_stats(OPENAI_MEAN, OPENAI_STD))


def _optimise(parameters, lr: float, weight_decay: float, steps: int, seed: int, batch_loss, progress: Progress,
              label: str) -> None:
    """AdamW with linear warm-up (10%) and cosine decay; ``batch_loss(generator)`` draws a batch, returns its loss."""
    opt = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    warmup = max(1, steps // 10)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * _cosine(step, steps, warmup)
        loss = batch_loss(g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 10 == 0 or step == steps - 1:
            progress(step / steps, f"{label}: step {step + 1}/{steps}, loss {loss.item():.3f}")


def _pretrain(model, tok, data: dict, recipe: Recipe, progress: Progress) -> None:
    """Contrastive pretraining of the whole CLIP on captioned training images of every task."""
    images, caption_ids, captions = [], [], []
    caption_index: dict[str, int] = {}
    for name in recipe.tasks:
        spec = TASKS[name][0]
        imgs, labels = data[name]["train"]
        g = torch.Generator().manual_seed(recipe.seed + sum(map(ord, name)))
        keep = torch.randperm(len(labels), generator=g)[: recipe.pretrain_per_task]
        imgs, labels = imgs[keep], labels[keep]
        templates = spec.templates + GENERIC
        choice = torch.randint(len(templates), (len(labels),), generator=g)
        draw = torch.rand(len(labels), generator=g)
        named_rate = recipe.class_caption_rate.get(name, 0.3)
        coarse = draw >= named_rate
        alias = coarse & (draw < named_rate + recipe.alias_caption_rate.get(name, 0.0))
        coarse_choice = torch.randint(len(COARSE_TEMPLATES), (len(labels),), generator=g)
        for i, lab in enumerate(labels.tolist()):
            if alias[i]:
                text = templates[int(choice[i])].format(spec.aliases[lab])
            elif coarse[i]:
                text = COARSE_TEMPLATES[int(coarse_choice[i])].format(spec.domain)
            else:
                text = templates[int(choice[i])].format(spec.classnames[lab])
            if text not in caption_index:
                caption_index[text] = len(captions)
                captions.append(text)
            caption_ids.append(caption_index[text])
        images.append(imgs)
    images = torch.cat(images)
    caption_ids = torch.tensor(caption_ids)
    tokens = tok(captions)
    def batch_loss(g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(images), (recipe.pretrain_batch,), generator=g)
        img = F.normalize(model.encode_image(_normalise(images[idx])), dim=-1)
        uniq, inverse = torch.unique(caption_ids[idx], return_inverse=True)
        txt = F.normalize(model.encode_text(tokens[uniq]), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T  # (batch, unique captions)
        loss_i2t = F.cross_entropy(logits, inverse)
        positives = (inverse[None, :] == torch.arange(len(uniq))[:, None]).float()  # caption -> its images
        loss_t2i = -(positives * F.log_softmax(logits.T, dim=1)).sum(1).div(positives.sum(1)).mean()
        return (loss_i2t + loss_t2i) / 2

    model.train()
    _optimise(model.parameters(), recipe.pretrain_lr, recipe.weight_decay, recipe.pretrain_steps, recipe.seed,
              batch_loss, progress, "pretraining CLIP")
    model.eval()


def linearised(visual, start: dict):
    """``x -> f(x; θ₀) + J_θ f(x; θ₀)·(θ − θ₀)``: the first-order Taylor expansion at ``start`` (θ₀) of the
    module ``visual`` as a function of its current parameters θ, differentiable in θ (one forward-mode
    derivative per call; Ortiz-Jiménez et al., 2023)."""
    from torch.func import functional_call, jvp
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def features(x: torch.Tensor) -> torch.Tensor:
        params = dict(visual.named_parameters())
        tangent = {k: params[k] - start[k] for k in params}
        fastpath = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)  # the fused attention kernels have no forward-mode derivative
        try:
            with sdpa_kernel(SDPBackend.MATH):
                out, dout = jvp(lambda p: functional_call(visual, p, (x,)), ({k: start[k] for k in params},),
                                (tangent,))
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)
        return out + dout
    return features


def _finetune(visual, head: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, recipe: Recipe, seed: int,
              progress: Progress) -> None:
    """Fine-tune ``visual`` in place on one task, its zero-shot ``head`` frozen, with cross-entropy: the
    parameters ``recipe.finetune_params`` names move, of the network or (``finetune_linear``) of its
    first-order Taylor expansion at the weights it starts from."""
    if recipe.finetune_params not in FINETUNED:
        raise TatrError(f"finetune_params must be one of {', '.join(FINETUNED)}, got '{recipe.finetune_params}'")
    moves = FINETUNED[recipe.finetune_params]
    for name, p in visual.named_parameters():
        p.requires_grad_(moves(name))
    # the linearised tower expands around the weights it starts from (a copy: they change in place)
    features = (linearised(visual, {name: p.detach().clone() for name, p in visual.named_parameters()})
                if recipe.finetune_linear else visual)

    def batch_loss(g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(labels), (recipe.finetune_batch,), generator=g)
        return F.cross_entropy(head_logits(features(_normalise(images[idx])), head), labels[idx])

    visual.train()
    try:
        _optimise([p for p in visual.parameters() if p.requires_grad], recipe.finetune_lr, recipe.weight_decay,
                  recipe.finetune_steps, seed, batch_loss, progress, "fine-tuning")
    finally:
        for p in visual.parameters():
            p.requires_grad_(True)
        visual.eval()


@torch.inference_mode()
def _accuracy(visual, head, images, labels) -> float:
    correct = 0
    for start in range(0, len(labels), 1000):
        logits = head_logits(visual(_normalise(images[start:start + 1000])), head)
        correct += int((logits.argmax(1) == labels[start:start + 1000]).sum())
    return correct / len(labels)


#: Built zoos shipped with the code (weights and zoo.json; the task images are regenerated on install)
SHIPPED = Path(__file__).resolve().parent / "shipped"
#: test-accuracy difference per task (fraction) within which a build reproduces the shipped one
#: (a build with another thread count sums in another order; the same machine gives identical bits)
REPRODUCE_TOLERANCE = 0.01


def _weight_files(recipe: Recipe) -> tuple[str, ...]:
    """The weight files of a built zoo (what a Zoo loads besides its task images; shipped with its zoo.json)."""
    return ("pretrained.safetensors", "heads.safetensors") + tuple(f"finetuned_{t}.safetensors" for t in recipe.tasks)


@contextmanager
def _staging(preset: str, final: Path):
    """A temporary folder beside ``final`` to write a zoo into; removed if anything goes wrong."""
    tmp = tempfile.mkdtemp(prefix=f".{preset}-", dir=final.parent)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish(tmp: str, final: Path, info: dict, progress: Progress, message: str) -> str:
    """Seal the zoo's record over every file in ``tmp``, write it and the COMPLETE mark, then move it into place."""
    files = sorted(p.name for p in Path(tmp).iterdir() if p.is_file() and p.name not in ("zoo.json", "COMPLETE"))
    write_json_atomic(Path(tmp) / "zoo.json", seal(info, tmp, files))
    (Path(tmp) / "COMPLETE").write_text("ok\n")
    progress(1.0, message)
    return str(publish_dir(Path(tmp), final))


def file_hash(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def seal(info: dict, folder: str | Path, names: list[str]) -> dict:
    """``info`` with the SHA-256 of each of the files ``names`` in ``folder`` and of its own content."""
    info = {k: v for k, v in info.items() if k != "sha256"}
    info["files"] = {**info.get("files", {}), **{name: file_hash(Path(folder) / name) for name in names}}
    return {**info, "sha256": content_hash(info)}


def seal_problem(info, folder: str | Path, names: list[str] | None = None) -> str | None:
    """What is wrong with a zoo record and its files (None when the seal holds): an edited record, a file
    missing, or a file whose content is not the one recorded.  ``names``: the files to check (default all)."""
    if not isinstance(info, dict) or "sha256" not in info or not isinstance(info.get("files"), dict):
        return "its record holds no seal (written by an older version, or edited)"
    if content_hash({k: v for k, v in info.items() if k != "sha256"}) != info["sha256"]:
        return "its record zoo.json was edited after it was written"
    for name in names or list(info["files"]):
        path = Path(folder) / name
        if name not in info["files"] or not path.is_file() or path.is_symlink():
            return f"{name} is missing"
        if file_hash(path) != info["files"][name]:
            return f"{name} does not match the hash recorded when it was written"
    return None


def zoo_key(preset: str) -> str:
    if preset not in PRESETS:
        raise TatrError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    return digest(PRESETS[preset].as_dict())


def shipped_folder(preset: str) -> Path | None:
    """The shipped build of this preset's current recipe, if the code ships one."""
    folder = SHIPPED / f"{preset}-{zoo_key(preset)}"
    return folder if (folder / "zoo.json").is_file() else None


#: a recipe's task images are generated in worker processes (one per core) from this many images in all:
#: a worker takes about 2 s to start (it imports torch), and the mini zoo's 21,600 images take 9 s on
#: one core; the tests' micro zoo stays in the process
PARALLEL_IMAGES = 10_000


def _generate_data(recipe: Recipe, folder: str | Path, progress: Progress, share: float, meanwhile=None) -> dict:
    """Every task's images, written into ``folder`` (:func:`~tatr_core.data.mini.task_file`) and returned
    (``{task: {split: (images, labels)}}``, in the recipe's order). On every core when there are enough of
    them to pay for the workers' start; each task's generator is seeded on its own, so the images are the
    same bits either way. ``meanwhile()`` runs in this process while the workers work (else first)."""
    tasks = recipe.tasks
    workers = min(len(tasks), os.cpu_count() or 1)
    if workers > 1 and len(tasks) * sum(recipe.sizes.values()) >= PARALLEL_IMAGES:
        if _generate_in_workers(recipe, folder, workers, progress, share, meanwhile):
            meanwhile = None
    if meanwhile is not None:
        meanwhile()
    data = {}
    for i, name in enumerate(tasks):
        path = task_file(folder, name)
        if not path.exists():  # no workers, or one failed
            progress(share * i / len(tasks), f"generating task images: {name}")
            save_task(path, generate_task(name, recipe.sizes, recipe.seed))
        data[name] = load_task(path)
    return data


def _generate_in_workers(recipe: Recipe, folder: str | Path, workers: int, progress: Progress, share: float,
                         meanwhile) -> bool:
    """The tasks' images generated by ``workers`` processes (``python -m tatr_core.data.mini``: plain
    subprocesses, so nothing of the calling program, a Streamlit script included, runs again in them), each
    writing its files into ``folder``, ``meanwhile()`` run here while they work; a task whose worker failed
    is left for the caller, with a notice. False when no worker could start (``meanwhile`` not run)."""
    import json
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[2])  # where tatr_core is importable from
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    procs = []
    try:
        for i in range(workers):
            log = tempfile.TemporaryFile()
            command = [sys.executable, "-m", "tatr_core.data.mini", str(folder), json.dumps(recipe.sizes),
                       str(recipe.seed), *recipe.tasks[i::workers]]
            try:
                procs.append((subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env=env), log))
            except OSError as exc:  # no interpreter to start here (an embedded Python): the caller generates them
                log.close()
                notice(f"task images generated in this process (a worker could not start: {exc})")
                break
        if not procs:
            return False
        progress(0.0, f"generating task images on {len(procs)} cores")
        if meanwhile is not None:
            meanwhile()
        shown = 0
        while any(proc.poll() is None for proc, _ in procs):
            done = sum(task_file(folder, name).exists() for name in recipe.tasks)
            if done != shown:
                progress(share * done / len(recipe.tasks),
                         f"generating task images on {len(procs)} cores: {done} of {len(recipe.tasks)} tasks")
                shown = done
            time.sleep(0.1)
        for proc, log in procs:
            if proc.returncode != 0:
                log.seek(0)
                last = (log.read().decode(errors="replace").strip().splitlines() or ["no message"])[-1]
                notice(f"a worker generating task images failed ({last}); its tasks are generated in this process")
        return True
    finally:
        for proc, log in procs:
            if proc.poll() is None:  # interrupted: no worker outlives the install
                proc.kill()
                proc.wait()
            log.close()


def _install_shipped(preset: str, shipped: Path, final: Path, progress: Progress) -> str:
    """Put the shipped build into the cache: its weights copied, its task images generated here
    (the same seeded generators as a build), in seconds instead of the build's minutes."""
    recipe = PRESETS[preset]
    info = read_json(shipped / "zoo.json")
    if info is None or info.get("key") != zoo_key(preset):
        raise TatrError(f"the shipped zoo in {shipped} does not match its recipe; rebuild it with "
                        f"'python -m tatr_core zoo build --preset {preset} --from-scratch'")
    problem = seal_problem(info, shipped, list(_weight_files(recipe)))
    if problem is not None:
        raise TatrError(f"the shipped zoo in {shipped} is damaged ({problem}), so it is not installed: restore it "
                        f"with 'git checkout -- {shipped.relative_to(SHIPPED.parents[2])}', or build the zoo here with "
                        f"'python -m tatr_core zoo build --preset {preset} --from-scratch'")
    with _staging(preset, final) as tmp:
        start = time.perf_counter()
        # open_clip (seconds to import; the zoo's evaluator needs it next) imports while the workers work
        _generate_data(recipe, tmp, progress, 0.9, meanwhile=open_clip_module)
        for name in _weight_files(recipe):
            shutil.copyfile(shipped / name, Path(tmp) / name)
        info["installed_from"] = "shipped with the code (tatr_core/zoo/shipped/), task images generated here"
        info["install_seconds"] = round(time.perf_counter() - start, 1)
        return _publish(tmp, final, info, progress, f"zoo '{preset}' installed in {info['install_seconds']:.0f} s")


def build(preset: str, progress: Progress = no_progress, from_scratch: bool = False) -> str:
    """The preset's zoo in the cache (if it is not there yet: installed from the shipped build of its
    recipe when the code has one, else built); return its folder.

    ``from_scratch``: build it whatever the cache and the shipped files hold, into a new folder of
    the cache (``<preset>-<key>-scratch``), which :func:`compare_with_shipped` then checks."""
    key = zoo_key(preset)
    recipe = PRESETS[preset]
    final = cache_dir("zoos") / (f"{preset}-{key}" + ("-scratch" if from_scratch else ""))
    if (final / "COMPLETE").exists():
        if not from_scratch:
            return str(final)
        shutil.rmtree(final, ignore_errors=True)
    shipped = None if from_scratch else shipped_folder(preset)
    if shipped is not None:
        return _install_shipped(preset, shipped, final, progress)
    start = time.perf_counter()
    threads = torch.get_num_threads()
    with _staging(preset, final) as tmp:
        torch.manual_seed(recipe.seed)
        weights = {"data": 0.05, "pretrain": 0.45, "finetune": 0.5}
        data = _generate_data(recipe, tmp, progress, weights["data"], meanwhile=open_clip_module)
        model = create_clip(recipe.arch)
        tok = tokenizer(recipe.arch)
        _pretrain(model, tok, data, recipe,
                  lambda f, m: progress(weights["data"] + weights["pretrain"] * f, m))
        heads = {name: zero_shot_head(model, tok, TASKS[name][0].classnames, TASKS[name][0].templates,
                                      recipe.head_scale_of(model)) for name in recipe.tasks}
        pretrained = {k: v.detach().clone() for k, v in model.visual.state_dict().items()}
        save_safetensors(model.state_dict(), f"{tmp}/clip_pretrained.safetensors")
        save_safetensors(pretrained, f"{tmp}/pretrained.safetensors")
        save_safetensors(heads, f"{tmp}/heads.safetensors")
        reference = {}
        for i, name in enumerate(recipe.tasks):
            base = weights["data"] + weights["pretrain"] + weights["finetune"] * i / len(recipe.tasks)
            visual = model.visual
            visual.load_state_dict(pretrained)
            test_x, test_y = data[name]["test"]
            zs = _accuracy(visual, heads[name], test_x, test_y)
            _finetune(visual, heads[name], *data[name]["train"], recipe, recipe.seed + 1000 + i,
                      lambda f, m, name=name, base=base: progress(base + weights["finetune"] / len(recipe.tasks) * f,
                                                                  m.replace("fine-tuning", f"fine-tuning {name}")))
            reference[name] = {"zero_shot": zs, "individual": _accuracy(visual, heads[name], test_x, test_y)}
            save_safetensors(visual.state_dict(), f"{tmp}/finetuned_{name}.safetensors")
        info = {
            "preset": preset, "key": key, "recipe": recipe.as_dict(), "arch": recipe.arch,
            "build_seconds": round(time.perf_counter() - start, 1), "torch_threads": threads,
            "reference_test_accuracy": reference,
            "tasks": [{"name": n, "classnames": list(TASKS[n][0].classnames), "source": TASKS[n][0].source}
                      for n in recipe.tasks],
        }
        return _publish(tmp, final, info, progress, f"zoo '{preset}' built in {info['build_seconds']:.0f} s")


def compare_with_shipped(preset: str, built: str | Path) -> list[str]:
    """Lines saying how a build from scratch compares with the shipped build of the same recipe:
    which weight files are bit-identical, and each task's test accuracies (zero-shot, fine-tuned)."""
    shipped = shipped_folder(preset)
    if shipped is None:
        return [f"no shipped build of this recipe to compare with (tatr_core/zoo/shipped/{preset}-{zoo_key(preset)})"]
    recipe, built = PRESETS[preset], Path(built)
    files = _weight_files(recipe)
    same = [f for f in files if (shipped / f).read_bytes() == (built / f).read_bytes()]
    lines = [f"weight files bit-identical to the shipped build: {len(same)} of {len(files)}"]
    ours = read_json(built / "zoo.json")["reference_test_accuracy"]
    theirs = read_json(shipped / "zoo.json")["reference_test_accuracy"]
    worst = 0.0
    for task in recipe.tasks:
        a, b = ours[task], theirs[task]
        diff = max(abs(a[k] - b[k]) for k in ("zero_shot", "individual"))
        worst = max(worst, diff)
        lines.append(f"  {task:14s} zero-shot {100 * a['zero_shot']:5.1f} (shipped {100 * b['zero_shot']:5.1f})  "
                     f"fine-tuned {100 * a['individual']:5.1f} (shipped {100 * b['individual']:5.1f})")
    lines.append(f"largest accuracy difference: {100 * worst:.1f} points "
                 + ("(reproduces the shipped zoo)" if worst <= REPRODUCE_TOLERANCE else
                    f"(MORE than the {100 * REPRODUCE_TOLERANCE:g} points a reproduction allows)"))
    return lines



def ship(preset: str, built: str | Path) -> Path:
    """Copy a build's weights and zoo.json into ``tatr_core/zoo/shipped/`` (the maintainers' step after
    a recipe change; the zoo then installs in seconds on every machine)."""
    built = Path(built)
    info = read_json(built / "zoo.json")
    target = SHIPPED / f"{preset}-{info['key']}"
    target.mkdir(parents=True, exist_ok=True)
    names = list(_weight_files(PRESETS[preset]))
    for name in names:
        shutil.copyfile(built / name, target / name)
    record = {k: v for k, v in info.items() if k not in ("folder", "files", "sha256")}
    write_json_atomic(target / "zoo.json", seal(record, target, names))
    return target


#: the zoo folders verified in this process
_VERIFIED: set[str] = set()


def load(preset: str, progress: Progress = no_progress) -> Zoo:
    folder = Path(build(preset, progress))
    info = read_json(folder / "zoo.json")
    if str(folder) not in _VERIFIED:
        problem = seal_problem(info, folder)
        if problem is not None:  # the cached copy is damaged: installed (or built) again, never served
            notice(f"the cached zoo in {folder} is damaged ({problem}); installing it again")
            shutil.rmtree(folder, ignore_errors=True)
            folder = Path(build(preset, progress))
            info = read_json(folder / "zoo.json")
            if seal_problem(info, folder) is not None:
                raise TatrError(f"the zoo installed in {folder} does not verify; remove the folder and run the "
                                "command again")
        _VERIFIED.add(str(folder))
    heads = read_state_dict(folder / "heads.safetensors")
    tasks = {}
    for t in info["tasks"]:
        splits = load_task(task_file(folder, t["name"]))
        tasks[t["name"]] = Task(t["name"], t["classnames"], heads[t["name"]], splits, t["source"])
    finetuned = {t: read_state_dict(folder / f"finetuned_{t}.safetensors") for t in tasks}
    info["folder"] = str(folder)
    return Zoo(preset, info["arch"], read_state_dict(folder / "pretrained.safetensors"), finetuned, tasks,
               OPENAI_MEAN, OPENAI_STD, f"{preset}-{info['key']}", info)

