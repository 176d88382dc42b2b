"""One image, decoded and preprocessed as open_clip's evaluation transform does: the shorter side resized
to the model's resolution (bicubic), the centre cropped square, kept as uint8 (3, S, S); the evaluator
normalises batch by batch.

Refused with a :class:`TatrError` naming the image: what is not an image, a truncated file, and an image
that claims more than :data:`MAX_PIXELS` pixels (a decompression bomb: a small PNG can claim 50,000 ×
50,000) before any of it is decoded.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from ..errors import TatrError

#: the largest image decoded: Pillow's own limit, 178,956,970 pixels (13,377²; a benchmark's largest photos
#: are a few megapixels); Pillow refuses larger ones while it reads the header
MAX_PIXELS = 2 * 89_478_485
#: what the transform is; part of every preprocessed cache key (changed: every cache entry is rebuilt)
TRANSFORM = "open_clip eval: shorter side bicubic to S, centre crop S, uint8"


def preprocess(source: bytes | str | os.PathLike, size: int, where: str = "") -> np.ndarray:
    """``source`` (a file path, or the encoded bytes of an image) as uint8 (3, size, size)."""
    from PIL import Image, UnidentifiedImageError

    what = where or (str(source) if not isinstance(source, (bytes, bytearray, memoryview)) else "an image")
    try:  # no warnings.catch_warnings here: it is not thread-safe, and decoding runs on threads
        stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else open(source, "rb")
        with stream, Image.open(stream) as im:
            w, h = im.size  # from the header: nothing decoded yet
            if w * h > MAX_PIXELS:
                raise TatrError(f"{what}: claims {w:,} × {h:,} pixels, over the limit of {MAX_PIXELS:,} (a "
                                "decompression bomb, or not a photo): remove it from the dataset")
            im = im.convert("RGB")
            scale = size / min(w, h)
            im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            return np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8).transpose(2, 0, 1)
    except TatrError:
        raise
    except Image.DecompressionBombError as exc:
        raise TatrError(f"{what}: {exc} (a decompression bomb?): remove it from the dataset") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise TatrError(f"{what}: not a readable image ({str(exc).splitlines()[0][:160] or type(exc).__name__}); "
                        "replace or remove the file") from None


def is_path(value) -> bool:
    return isinstance(value, (str, Path))
