"""Where a split's images and labels are kept, read without holding the split: image folders, parquet files
(the Hugging Face hub cache's raw files, or any folder of them) and Arrow files (the ``datasets``
library's prepared cache and its ``save_to_disk`` folders).

Every source gives its length, its labels (one small column read), a fingerprint made from file
stats (so that a changed file is noticed without reading any image), and the encoded bytes (or file
path) of the images asked for, by index: :mod:`tatr_core.data.store` decodes only those.  Sources are
picklable (paths and column names), so that decoding workers reopen them.

A corrupt or truncated parquet or Arrow file, a missing column, a label outside the class list and a
row without an image are each a :class:`TatrError` naming the file, the row and the fix.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import TatrError, shown

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
#: column names taken as the image / label column when a dataset does not say (its features do first)
IMAGE_COLUMNS = ("image", "img", "images", "png", "jpg")
LABEL_COLUMNS = ("label", "labels", "fine_label", "class", "target")


def stat(path: Path) -> list:
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


class Source:
    """A split's images where they are kept (see the module docstring)."""

    kind = "source"
    where: str = ""

    def __len__(self) -> int:
        raise NotImplementedError

    def labels(self) -> np.ndarray:
        raise NotImplementedError

    def fingerprint(self) -> list:
        raise NotImplementedError

    def encoded(self, indices: Sequence[int]) -> list:
        """The images at ``indices``: each its encoded bytes or its file path."""
        raise NotImplementedError

    def describe(self, index: int) -> str:
        return f"{self.where}, row {index}"


# ----------------------------------------------------------------------------------------- image folders
class FolderSource(Source):
    """``<folder>/<class>/*.png|jpg|...``, classes in the order given (their index is the label)."""

    kind = "folder"

    def __init__(self, folder: Path, classes: Sequence[str], manifest: Path | str = ""):
        self.folder, self.classes = Path(folder), list(classes)
        self.where = str(self.folder)
        files, labels = [], []
        for c, name in enumerate(self.classes):
            d = self.folder / name
            if not d.is_dir():
                raise TatrError(f"{manifest or self.folder}: class folder '{d}' is missing (expected one folder per class)")
            for f in sorted(d.iterdir()):
                if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                    files.append(f)
                    labels.append(c)
        if not files:
            raise TatrError(f"{manifest or self.folder}: no images under {self.folder}")
        self.files, self._labels = files, np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.files)

    def labels(self) -> np.ndarray:
        return self._labels

    def fingerprint(self) -> list:
        return [stat(f) for f in self.files]

    def encoded(self, indices: Sequence[int]) -> list:
        return [self.files[i] for i in indices]

    def describe(self, index: int) -> str:
        return str(self.files[index])


# ----------------------------------------------------------------------------------------- columns
def features_of(metadata: dict | None) -> dict:
    """The ``datasets`` features recorded in an Arrow / parquet schema's ``huggingface`` metadata ({} if none)."""
    if not metadata or b"huggingface" not in metadata:
        return {}
    try:
        info = json.loads(metadata[b"huggingface"])
    except (ValueError, UnicodeDecodeError):
        return {}
    features = (info.get("info") or {}).get("features") or {}
    return features if isinstance(features, dict) else {}


def classlabel_names(features: dict, column: str) -> list[str] | None:
    """The names of a ``ClassLabel`` feature (None when the column is no ClassLabel)."""
    feature = features.get(column)
    if isinstance(feature, dict) and feature.get("_type") == "ClassLabel" and isinstance(feature.get("names"), list):
        return [str(n) for n in feature["names"]]
    return None


def pick_columns(names: Sequence[str], features: dict, image: str | None, label: str | None,
                 where: str) -> tuple[str, str]:
    """The image and label columns: the ones given, else the dataset's Image / ClassLabel features, else the
    usual names; a missing one is an error listing the columns."""
    names = list(names)
    if image is None:
        image = next((c for c in names if (features.get(c) or {}).get("_type") == "Image"), None) or \
            next((c for c in IMAGE_COLUMNS if c in names), None)
    if label is None:
        label = next((c for c in names if (features.get(c) or {}).get("_type") == "ClassLabel"), None) or \
            next((c for c in LABEL_COLUMNS if c in names), None)
    for what, column in (("image", image), ("label", label)):
        if column is None or column not in names:
            raise TatrError(f"{where}: no {what} column{f' {shown(column)}' if column else ''} (its columns: "
                            f"{', '.join(names)}); name it with '{what}_column' in the manifest")
    return image, label


def image_value(value, where: str, base: Path | None):
    """An image cell (a ``datasets`` Image struct {bytes, path}, raw bytes, or a path) as bytes or a path."""
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data or (data is not None and not path):  # b"" with no path: an empty cell
            return image_value(bytes(data), where, base)
        value = path
    if isinstance(value, (bytes, bytearray)):
        if not value:
            raise TatrError(f"{where}: the image cell is empty; replace the row or remove it")
        return bytes(value)
    if isinstance(value, str) and value:
        path = Path(value) if os.path.isabs(value) or base is None else base / value
        if not path.is_file():
            raise TatrError(f"{where}: the image cell names the file {shown(value)}, which does not exist (looked at "
                            f"{path})")
        return path
    raise TatrError(f"{where}: the image cell holds {shown(value)}, not an image (bytes, or a path to one); check "
                    "'image_column'")


def integer_labels(values: np.ndarray, classes: int | None, where: str) -> np.ndarray:
    """Labels as int64 in [0, classes) (a boolean column, as PCam's, is 0 / 1); a label outside is an error naming
    its row."""
    if values.dtype.kind == "b":
        values = values.astype(np.int64)
    if values.dtype.kind not in "iu":
        raise TatrError(f"{where}: the label column holds {values.dtype} values, not class indices; name the integer "
                        "column with 'label_column'")
    labels = values.astype(np.int64)
    if classes is not None and len(labels):
        bad = np.nonzero((labels < 0) | (labels >= classes))[0]
        if len(bad):
            raise TatrError(f"{where}: row {int(bad[0])} has label {int(labels[bad[0]])}, outside the {classes} classes "
                            f"(0 … {classes - 1}); {len(bad):,} rows do: the class list does not fit this dataset")
    return labels


# ----------------------------------------------------------------------------------------- parquet
def _parquet_error(path: Path, exc: Exception) -> TatrError:
    return TatrError(f"{path}: not a readable parquet file ({str(exc).splitlines()[0][:160]}): it is corrupt or was "
                     "cut short; download the dataset again")


class ParquetSource(Source):
    """Parquet files read row group by row group (only the image column of the groups that are used)."""

    kind = "parquet"

    def __init__(self, files: Sequence[Path], image_column: str | None = None, label_column: str | None = None,
                 base: Path | None = None):
        import pyarrow.parquet as pq

        self.files = [Path(f) for f in files]
        if not self.files:
            raise TatrError("a parquet split with no files")
        self.base = base
        self.where = str(self.files[0].parent)
        self._groups: list[tuple[int, int, int]] = []  # (file, row group, first row of the group)
        features, names = {}, None
        total = 0
        self._file_starts: list[int] = []
        for n, f in enumerate(self.files):
            self._file_starts.append(total)
            try:
                meta = pq.ParquetFile(f)
            except Exception as exc:  # pyarrow's ArrowInvalid / OSError for a corrupt or cut file
                raise _parquet_error(f, exc) from None
            schema = meta.schema_arrow
            names = names or schema.names
            features = features or features_of(schema.metadata)
            for g in range(meta.num_row_groups):
                self._groups.append((n, g, total))
                total += meta.metadata.row_group(g).num_rows
        self._n = total
        self.features = features
        self.image_column, self.label_column = pick_columns(names, features, image_column, label_column,
                                                            str(self.files[0]))
        self._starts = np.asarray([g[2] for g in self._groups] + [total], dtype=np.int64)

    def __len__(self) -> int:
        return self._n

    def classnames(self) -> list[str] | None:
        return classlabel_names(self.features, self.label_column)

    def labels(self, classes: int | None = None) -> np.ndarray:
        import pyarrow.parquet as pq

        parts = []
        for f in self.files:
            try:
                parts.append(pq.read_table(f, columns=[self.label_column]).column(0).to_numpy())
            except Exception as exc:
                raise _parquet_error(f, exc) from None
        return integer_labels(np.concatenate(parts) if parts else np.zeros(0, np.int64), classes, self.where)

    def fingerprint(self) -> list:
        return [stat(f) for f in self.files] + [self.image_column, self.label_column]

    def _group(self, k: int):
        """Row group ``k``'s image column (only that column of that group is read)."""
        import pyarrow.parquet as pq

        n, g, _ = self._groups[k]
        try:
            return pq.ParquetFile(self.files[n]).read_row_group(g, columns=[self.image_column]).column(0)
        except Exception as exc:
            raise _parquet_error(self.files[n], exc) from None

    def encoded(self, indices: Sequence[int]) -> list:
        """The cells of ``indices``; each row group they fall in is read once, for this call only (decoding
        threads and processes each read their own groups; a group can hold thousands of photos)."""
        rows = np.asarray(indices, dtype=np.int64)
        groups = np.searchsorted(self._starts, rows, side="right") - 1
        out: list = [None] * len(rows)
        for k in np.unique(groups):
            column = self._group(int(k))
            for j in np.nonzero(groups == k)[0]:
                i = int(rows[j])
                out[j] = image_value(column[i - self._groups[k][2]].as_py(), self.describe(i), self.base)
        return out

    def describe(self, index: int) -> str:
        k = int(np.searchsorted(self._starts, index, side="right") - 1)
        n = self._groups[k][0]
        return f"{self.files[n]}, row {index - self._file_starts[n]}"


# ----------------------------------------------------------------------------------------- arrow
def _arrow_error(path: Path, exc: Exception) -> TatrError:
    return TatrError(f"{path}: not a readable Arrow file ({str(exc).splitlines()[0][:160]}): it is corrupt or was cut "
                     "short; prepare or save the dataset again")


def open_arrow(path: Path):
    """An Arrow file as a table whose columns are mapped from the file (the ``datasets`` library writes the
    IPC stream format; the file format is read too)."""
    import pyarrow as pa

    try:
        source = pa.memory_map(str(path))
        try:
            return pa.ipc.open_stream(source).read_all()
        except pa.ArrowInvalid:
            return pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    except Exception as exc:
        raise _arrow_error(path, exc) from None


class ArrowSource(Source):
    """Arrow files (``datasets``' prepared cache shards, or a ``save_to_disk`` split), mapped, not read."""

    kind = "arrow"

    def __init__(self, files: Sequence[Path], image_column: str | None = None, label_column: str | None = None,
                 features: dict | None = None, base: Path | None = None):
        self.files = [Path(f) for f in files]
        if not self.files:
            raise TatrError("an Arrow split with no files")
        self.base = base
        self.where = str(self.files[0].parent)
        tables = [open_arrow(f) for f in self.files]
        self.features = features or features_of(tables[0].schema.metadata)
        self.image_column, self.label_column = pick_columns(tables[0].schema.names, self.features, image_column,
                                                            label_column, str(self.files[0]))
        sizes = [t.num_rows for t in tables]
        self._starts = np.cumsum([0] + sizes).astype(np.int64)
        self._tables = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_tables"] = None
        return state

    def _table(self, n: int):
        if self._tables is None:
            self._tables = [open_arrow(f) for f in self.files]
        return self._tables[n]

    def __len__(self) -> int:
        return int(self._starts[-1])

    def classnames(self) -> list[str] | None:
        return classlabel_names(self.features, self.label_column)

    def labels(self, classes: int | None = None) -> np.ndarray:
        parts = [self._table(n).column(self.label_column).to_numpy() for n in range(len(self.files))]
        return integer_labels(np.concatenate(parts), classes, self.where)

    def fingerprint(self) -> list:
        return [stat(f) for f in self.files] + [self.image_column, self.label_column]

    def encoded(self, indices: Sequence[int]) -> list:
        out = []
        for i in map(int, indices):
            n = int(np.searchsorted(self._starts, i, side="right") - 1)
            cell = self._table(n).column(self.image_column)[i - int(self._starts[n])].as_py()
            out.append(image_value(cell, self.describe(i), self.base))
        return out

    def describe(self, index: int) -> str:
        n = int(np.searchsorted(self._starts, index, side="right") - 1)
        return f"{self.files[n]}, row {index - int(self._starts[n])}"


# ----------------------------------------------------------------------------------------- subsets
class Subset(Source):
    """Rows of another source (a validation split drawn from the training split, as FusionBench draws it)."""

    kind = "subset"

    def __init__(self, parent: Source, rows: np.ndarray, what: str):
        self.parent, self.rows, self.what = parent, np.asarray(rows, dtype=np.int64), what
        self.where = f"{parent.where} ({what})"

    def __len__(self) -> int:
        return len(self.rows)

    def labels(self, classes: int | None = None) -> np.ndarray:
        labels = self.parent.labels(classes) if isinstance(self.parent, (ParquetSource, ArrowSource)) else \
            self.parent.labels()
        return labels[self.rows]

    def fingerprint(self) -> list:
        return [self.parent.fingerprint(), self.what]

    def encoded(self, indices: Sequence[int]) -> list:
        return self.parent.encoded([int(self.rows[i]) for i in indices])

    def describe(self, index: int) -> str:
        return self.parent.describe(int(self.rows[index]))


def split_rows(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows) of ``n``: FusionBench's ``train_validation_split`` (``torch.utils.data.
    random_split`` with a generator seeded ``seed``: the first n − ⌊fraction·n⌋ of one permutation train, the
    rest validation)."""
    import torch

    n_val = int(n * fraction)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).numpy()
    return perm[: n - n_val], perm[n - n_val:]
