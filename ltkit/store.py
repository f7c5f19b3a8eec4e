"""The HDF5 feature store: the one module that imports h5py. Format: docs/store.md.

Reading: ``open_store(path)`` validates the file (HDF5, ltkit schema and version, finished,
every dataset present with consistent shapes and dtypes, no links or virtual data outside
what ltkit wrote) and returns a `Store` that hands out numpy arrays, never h5py objects.
A `Store` opens its file per process: used after a fork (a DataLoader worker) or unpickled
in another process, it reopens the file there instead of sharing the parent's handle.

Writing is crash-safe by construction: `create_store` allocates every dataset at creation
(early allocation, no filters) and writes every attribute, so the later `StoreWriter.write`
calls only fill raw data in place and never touch HDF5 metadata; a process killed at any
moment leaves a file that opens. Compression is applied afterwards by `pack_store`, which
writes a new file from the finished one.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from ltkit.artifacts import file_sha256, write_failure
from ltkit.errors import StoreError

SCHEMA = "ltkit-feature-store"
SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test", "bound")  # top-level splits; train and test are required
VIEWS = "train/views"  # augmented training views: a split of V * N rows, view-major
COMPRESSIONS = ("none", "lzf", "gzip")
JSON_ATTRS = ("dataset", "options", "lineage")  # root attributes stored as JSON text
REQUIRED_ATTRS = ("schema", "schema_version", "complete", "class_names", "train_counts",
                  "num_classes", "feature_shape", "arch", "layer", "head", "dataset",
                  "backbone_path", "backbone_sha256", "ltkit_version", "options", "seed",
                  "lineage", "train_views", "spatial_splits")
ROW_CHUNK_BYTES = 1 << 16  # chunk target for small per-sample rows (pooled, logits, cams, labels)
READ_BLOCK_BYTES = 64 << 20  # default block of iter_chunks: bounded memory
# Datasets per split: name -> (dtype, trailing shape as a function of (C, H, W, K)).
CORE = {"labels": ("int64", lambda c, h, w, k: ()),
        "pooled": ("float32", lambda c, h, w, k: (c,)),
        "logits": ("float32", lambda c, h, w, k: (k,))}
SPATIAL = {"features": ("float16", lambda c, h, w, k: (c, h, w)),
           "cams": ("float16", lambda c, h, w, k: (h, w))}
UNCHECKED = ("features",)  # float arrays whose reads skip the finiteness check (the big maps: the
                           # check would cost more than the read; their users check what they use)
H5_ERRORS = (OSError, KeyError, RuntimeError)  # what h5py raises on a damaged file


@contextlib.contextmanager
def _damage_is_store_error(path: Path) -> Iterator[None]:
    """h5py's errors on a damaged file (a bad header, heap or B-tree) as one-line StoreErrors."""
    try:
        yield
    except StoreError:
        raise
    except H5_ERRORS as exc:
        raise StoreError(f"{path} cannot be read ({_first_line(exc)}); it is damaged or "
                         f"truncated: re-extract it") from None


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """A write the file system refuses (disk full, size limit) as a one-line StoreError."""
    try:
        yield
    except StoreError:
        raise
    except (OSError, RuntimeError) as exc:
        reason = write_failure(exc)
        if reason is None:
            raise
        raise StoreError(f"could not write {path}: {reason}; free space (or raise the size "
                         f"limit) or choose another --out, then rerun") from None


@dataclass
class StoreLayout:
    """The shape of a store before anything is written."""

    channels: int  # C, channels of the feature map
    height: int  # H of the feature map
    width: int  # W of the feature map
    num_classes: int  # K
    rows: dict[str, int]  # split ("train", "val", "test", "train/views") -> number of rows
    spatial: tuple[str, ...] = ("train",)  # splits that keep features and cams; views follow train

    def datasets(self, split: str) -> dict[str, tuple[str, tuple[int, ...]]]:
        """name -> (dtype, full shape) of every array of `split`."""
        maps = split in self.spatial or (split == VIEWS and "train" in self.spatial)
        specs = dict(CORE, **(SPATIAL if maps else {}))
        dims = (self.channels, self.height, self.width, self.num_classes)
        return {name: (dtype, (self.rows[split], *trail(*dims))) for name, (dtype, trail) in specs.items()}


def _chunks(shape: tuple[int, ...], itemsize: int, name: str) -> tuple[int, ...] | None:
    """One sample per chunk for feature maps; about ROW_CHUNK_BYTES of rows for the rest."""
    if shape[0] == 0:
        return None  # an empty dataset cannot be chunked; contiguous and zero bytes
    row_bytes = itemsize * int(np.prod(shape[1:], dtype=np.int64))
    rows = 1 if name == "features" else max(1, min(shape[0], ROW_CHUNK_BYTES // max(row_bytes, 1)))
    return (rows, *shape[1:])


def _encode(value: Any) -> Any:
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return np.array(value, dtype=h5py.string_dtype())  # empty list -> empty str array
    if isinstance(value, (list, tuple)):
        return np.asarray(value, dtype=np.int64)
    return value


def _decode(name: str, value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if name in JSON_ATTRS and isinstance(value, str):
        return json.loads(value)
    if isinstance(value, np.ndarray):
        return [v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v
                for v in value]
    return value.item() if isinstance(value, np.generic) else value


def create_store(path: str | os.PathLike, layout: StoreLayout, *, attrs: dict[str, Any],
                 classifier: dict[str, Any], columns: dict[str, dict[str, np.ndarray]]) -> None:
    """Write a new store at `path` with every dataset allocated (zeros) and every attribute set.

    `attrs`: the root attributes (see docs/store.md; schema, version and `complete` are added).
    `classifier`: kind ("linear" | "cosine"), weight (K, C), bias (K,) or None, scale or None.
    `columns`: split -> name -> per-row arrays known before extraction (labels, indices).
    """
    missing = [k for k in REQUIRED_ATTRS if k not in attrs and k not in ("schema", "schema_version", "complete")]
    if missing:
        raise ValueError(f"create_store: missing root attributes {missing}")
    path = Path(path)
    raw = sum(int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
              for split in layout.rows for dtype, shape in layout.datasets(split).values())
    _check_room(path, raw + raw // 32 + (1 << 20))  # + chunk indexes and metadata, generously
    with _writing(path):
        _create(path, layout, attrs, classifier, columns)


def _check_room(path: Path, nbytes: int) -> None:
    """StoreError when a file of `nbytes` cannot fit: too little free disk, or a smaller file
    size limit (ulimit -f). Checked before HDF5 writes a byte: HDF5 failing half-way through
    creating a file leaves its library state in disarray (the rows written later fail cleanly)."""
    import shutil

    with contextlib.suppress(ImportError, OSError, ValueError):  # no `resource` on Windows
        import resource

        limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
        if limit != resource.RLIM_INFINITY and nbytes > limit:
            raise StoreError(f"could not write {path}: the store needs about {_size(nbytes)} but "
                             f"this process may write at most {_size(limit)} per file (ulimit -f); "
                             f"raise the limit, then rerun")
    free = shutil.disk_usage(path.parent).free
    if nbytes > free:
        raise StoreError(f"could not write {path}: the store needs about {_size(nbytes)} and "
                         f"{path.parent} has {_size(free)} free; free space or choose another "
                         f"--out, then rerun")


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.2f} MiB"


def _create(path, layout: StoreLayout, attrs: dict[str, Any], classifier: dict[str, Any],
            columns: dict[str, dict[str, np.ndarray]]) -> None:
    with h5py.File(path, "w", libver="earliest") as f:  # superblock v0: no open-for-write flag to clear after a kill
        for key, value in attrs.items():
            f.attrs[key] = _encode(value)
        f.attrs["schema"], f.attrs["schema_version"], f.attrs["complete"] = SCHEMA, SCHEMA_VERSION, 0
        head = f.create_group("classifier")
        head.attrs["kind"] = classifier["kind"]
        head.attrs["scale"] = float(classifier.get("scale") or 0.0)  # 0: no scale (linear)
        head.create_dataset("weight", data=np.asarray(classifier["weight"], np.float32))
        if classifier.get("bias") is not None:
            head.create_dataset("bias", data=np.asarray(classifier["bias"], np.float32))
        for split in layout.rows:
            group = f.require_group(split)
            for name, (dtype, shape) in layout.datasets(split).items():
                dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)  # all chunks placed now
                dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)  # no zero-fill pass over the file
                chunks = _chunks(shape, np.dtype(dtype).itemsize, name)
                group.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, dcpl=dcpl)
            for name, values in columns.get(split, {}).items():
                values = np.asarray(values)
                if values.shape[:1] != (layout.rows[split],):
                    raise ValueError(f"column {split}/{name}: {values.shape[0]} rows, expected {layout.rows[split]}")
                if name in group:
                    group[name][...] = values
                else:
                    group.create_dataset(name, data=values, chunks=_chunks(values.shape, values.itemsize, name))


class StoreWriter:
    """Fills the rows of a store made by `create_store`: raw data only, in place."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self._file = h5py.File(self.path, "r+")
        except OSError as exc:
            if write_failure(exc) in ("read-only file system", "permission denied"):
                raise StoreError(f"{self.path} cannot be opened for writing ({_first_line(exc)}); "
                                 f"fix the folder's permissions or choose another --out") from None
            raise StoreError(f"{self.path} cannot be opened for writing ({_first_line(exc)}); if "
                             f"another process has it open, wait for it or stop it") from None

    def write(self, split: str, start: int, **arrays: np.ndarray) -> None:
        """Rows ``[start, start + len)`` of each named dataset of `split`."""
        for name, values in arrays.items():
            ds = self._file[f"{split}/{name}"]
            values = np.ascontiguousarray(values, dtype=ds.dtype)
            if values.shape[1:] != ds.shape[1:] or start < 0 or start + len(values) > ds.shape[0]:
                raise ValueError(f"{split}/{name}: rows {start}..{start + len(values)} of shape "
                                 f"{values.shape[1:]} do not fit {ds.shape}")
            if len(values):
                with _writing(self.path):
                    ds.write_direct(values, dest_sel=np.s_[start:start + len(values)])

    def flush(self) -> None:
        with _writing(self.path):
            self._file.flush()

    def mark_complete(self) -> None:
        """Set the `complete` attribute in place (same type and size: no reallocation)."""
        with _writing(self.path):
            self._file.attrs.modify("complete", 1)
            self._file.flush()

    def close(self) -> None:
        if self._file.id.valid:
            with _writing(self.path):
                self._file.close()

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pack_store(src: str | os.PathLike, dst: str | os.PathLike, compression: str) -> None:
    """Copy a finished store into a new file with `compression` (lzf | gzip) on every array."""
    if compression not in COMPRESSIONS[1:]:
        raise ValueError(f"pack_store: compression must be lzf or gzip, got {compression!r}")
    with _writing(Path(dst)):
        _pack(src, dst, compression)


def _pack(src, dst, compression: str) -> None:
    with h5py.File(src, "r") as fin, h5py.File(dst, "w", libver="earliest") as fout:
        def copy(gin: h5py.Group, gout: h5py.Group) -> None:
            gout.attrs.update(gin.attrs)
            for name, obj in list(gin.items()):  # a list: see _check_links
                if isinstance(obj, h5py.Group):
                    copy(obj, gout.create_group(name))
                    continue
                ds = gout.create_dataset(name, shape=obj.shape, dtype=obj.dtype, chunks=obj.chunks,
                                         compression=compression if obj.chunks else None,
                                         shuffle=bool(obj.chunks))
                ds.attrs.update(obj.attrs)
                step = max(1, READ_BLOCK_BYTES // max(1, obj.dtype.itemsize * int(np.prod(obj.shape[1:]))))
                for start in range(0, obj.shape[0] if obj.shape else 1, step):
                    ds[start:start + step] = obj[start:start + step] if obj.shape else obj[()]
        copy(fin, fout)


class Store:
    """A validated feature store; see `open_store`. Hands out numpy arrays only."""

    def __init__(self, path: Path, allow_incomplete: bool = False):
        self.path = path
        self._allow_incomplete = allow_incomplete
        self._file: h5py.File | None = None
        self._pid = -1
        self._sha256: str | None = None
        self._offsets: dict[str, np.ndarray | None] = {}  # per dataset: row byte offsets, or None
        self._fd: int | None = None  # descriptor the maps' chunks are read through (h5py's own)
        self._own_fd = False         # True when we opened `_fd` ourselves (then we close it)
        try:
            with _damage_is_store_error(path):
                self.attrs = _validate(self._h5(), path, allow_incomplete)
                self.splits: list[str] = [s for s in SPLITS if s in self._h5()]
        except BaseException:
            self.close()
            raise
        self.class_names: list[str] = list(self.attrs["class_names"])
        self.train_counts = np.asarray(self.attrs["train_counts"], dtype=np.int64)  # (K,)
        self.views: int = int(self.attrs["train_views"])  # augmented views per training image

    def _h5(self) -> h5py.File:
        """This process's handle: reopened after a fork or an unpickle, never shared."""
        if self._file is None or self._pid != os.getpid() or not self._file.id.valid:
            try:
                self._file = h5py.File(self.path, "r")
                self._offsets, self._fd, self._own_fd = {}, None, False
            except OSError as exc:
                raise StoreError(f"{self.path} cannot be opened as HDF5 ({_first_line(exc)}); it is "
                                 f"truncated or damaged: run ltkit extract again") from None
            self._pid = os.getpid()
        return self._file

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_file": None, "_offsets": {}, "_fd": None, "_own_fd": False}

    def _ds(self, split: str, name: str) -> h5py.Dataset:
        if not self.has(split, name):
            raise StoreError(f"{self.path} has no /{split}/{name} (maps are kept for: "
                             f"{', '.join(self.attrs['spatial_splits']) or 'no split'}); "
                             f"re-extract with the split and options you need")
        with _damage_is_store_error(self.path):
            return self._h5()[f"{split}/{name}"]

    def has(self, split: str, name: str) -> bool:
        with _damage_is_store_error(self.path):
            return f"{split}/{name}" in self._h5()

    def shape(self, split: str, name: str) -> tuple[int, ...]:
        return tuple(self._ds(split, name).shape)

    def dtype(self, split: str, name: str) -> np.dtype:
        return self._ds(split, name).dtype

    def names(self, split: str) -> list[str]:
        """The arrays of `split` (subgroups such as `views` left out)."""
        with _damage_is_store_error(self.path):
            group = self._h5()[split]
            return [k for k, v in group.items() if isinstance(v, h5py.Dataset)]

    def rows(self, split: str) -> int:
        return self.shape(split, "labels")[0]

    def read(self, split: str, name: str, index: Any = None, *, channels_last: bool = False) -> np.ndarray:
        """All rows, or the rows at `index` (ints in any order, duplicates, negatives, a bool
        mask or a slice), as a new numpy array in the order asked for. ``channels_last``: maps
        (n, C, H, W) come out as (n, H, W, C), location vectors contiguous (read in 4 MiB
        pieces, each transposed into the result)."""
        ds = self._ds(split, name)
        n = ds.shape[0]
        if channels_last and ds.ndim != 4:
            raise StoreError(f"/{split}/{name} has shape {ds.shape}, not (N, C, H, W) maps")
        if index is None:
            return self._checked(ds, self._read_rows(ds, np.arange(n), channels_last))
        if isinstance(index, slice):
            index = np.arange(n)[index]
        index = np.asarray(index)
        if index.dtype == bool:
            if index.shape != (n,):
                raise IndexError(f"a boolean index of /{split}/{name} needs {n} entries, got {index.shape}")
            index = np.flatnonzero(index)
        index = index.astype(np.int64, copy=False).reshape(-1)
        if index.size and (index.min() < -n or index.max() >= n):
            raise IndexError(f"index out of range for /{split}/{name} with {n} rows")
        index = np.where(index < 0, index + n, index)
        unique, inverse = np.unique(index, return_inverse=True)  # h5py wants sorted, unique rows
        block = self._read_rows(ds, unique, channels_last)
        in_order = len(unique) == len(index) and np.array_equal(unique, index)
        return self._checked(ds, block if in_order else block[inverse])

    def iter_chunks(self, split: str, name: str, rows: int | None = None, start: int = 0,
                    stop: int | None = None, *, block_bytes: int = READ_BLOCK_BYTES,
                    channels_last: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, block)`` over rows [start, stop), `rows` at a time (default: about
        ``block_bytes``); ``channels_last`` as in `read`."""
        ds = self._ds(split, name)
        stop = ds.shape[0] if stop is None else min(stop, ds.shape[0])
        if rows is None:
            row_bytes = ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64))
            rows = max(1, block_bytes // max(row_bytes, 1))
        for first in range(start, stop, rows):
            rows_here = np.arange(first, min(first + rows, stop))
            yield first, self._checked(ds, self._read_rows(ds, rows_here, channels_last))

    def _checked(self, ds: h5py.Dataset, block: np.ndarray) -> np.ndarray:
        """``block`` of ``ds``, refused when a float array (all but the maps) holds NaN or inf:
        such values would flow silently into every later number."""
        name = ds.name.rsplit("/", 1)[-1]
        if block.dtype.kind == "f" and name not in UNCHECKED and not np.isfinite(block).all():
            raise StoreError(f"{self.path}: {ds.name} holds NaN or infinite values; the store is "
                             f"damaged or its backbone diverged: re-extract it (--precision fp32)")
        return block

    def _read_rows(self, ds: h5py.Dataset, rows: np.ndarray, channels_last: bool = False) -> np.ndarray:
        with _damage_is_store_error(self.path):
            return self._read_rows_unguarded(ds, rows, channels_last)

    def _descriptor(self) -> int:
        """The descriptor of the very file h5py has open (not its path: a store replaced by a
        rename while it is open is still read whole from the old file)."""
        if self._fd is None:
            try:
                self._fd = int(self._h5().id.get_vfd_handle())
            except (TypeError, ValueError, OSError):  # another file driver: open by path
                self._fd, self._own_fd = os.open(self.path, os.O_RDONLY), True
        return self._fd

    PIECE_BYTES = 4 << 20  # channels_last: rows read per step before they are transposed

    def _read_rows_unguarded(self, ds: h5py.Dataset, rows: np.ndarray, channels_last: bool) -> np.ndarray:
        """Rows of `ds` at sorted unique `rows`. Feature maps stored one unfiltered chunk per
        sample are read straight from the file into the result, one `preadv` per run of
        adjacent chunks (HDF5 costs ~10 us per chunk, which makes reading small maps ~10x
        slower than the disk; a memory map costs a page fault per 4 KiB and counts the pages
        it touched as this process's memory); everything else goes through HDF5."""
        if ds.name not in self._offsets:
            self._offsets[ds.name] = _row_offsets(ds)
        offsets = self._offsets[ds.name]
        if offsets is None or not len(rows):
            block = _read_sorted(ds, rows)
            return np.ascontiguousarray(np.moveaxis(block, 1, -1)) if channels_last else block
        fd, n, row = self._descriptor(), len(rows), ds.shape[1:]
        size, starts = ds.dtype.itemsize * int(np.prod(row)), offsets[rows]  # (n,) byte offset of each row's chunk
        if channels_last:  # rows as (C, H*W) in the file, (H*W, C) in `out`: read, then transpose
            out = np.empty((n, *row[1:], row[0]), ds.dtype)
            dest = out.reshape(n, -1, row[0])  # (n, L, C)
            piece = max(1, self.PIECE_BYTES // size)
            staging = np.empty((min(n, piece), row[0], dest.shape[1]), ds.dtype)  # (p, C, L)
        else:
            out = np.empty((n, *row), ds.dtype)
            flat = out.reshape(n, -1).view(np.uint8)  # (n, row bytes)
            piece = n
        breaks = np.flatnonzero(np.diff(starts) != size) + 1  # runs of adjacent chunks
        for first, end in zip(np.r_[0, breaks], np.r_[breaks, n]):
            for a in range(first, end, piece):
                b = min(a + piece, end)
                target = staging[:b - a] if channels_last else flat[a:b]
                self._pread(fd, target, int(starts[a]), ds)
                if channels_last:
                    dest[a:b] = target.transpose(0, 2, 1)
        return out

    def _pread(self, fd: int, target: np.ndarray, offset: int, ds: h5py.Dataset) -> None:
        """Fill ``target`` (contiguous) with the file's bytes from ``offset``."""
        view = memoryview(target.reshape(-1).view(np.uint8))
        done = 0
        while done < len(view):  # a regular file reads short only at its end
            got = os.preadv(fd, [view[done:]], offset + done)
            if got == 0:
                raise StoreError(f"{self.path} ends inside /{ds.name.lstrip('/')}; it is "
                                 "truncated: re-extract it")
            done += got

    def classifier(self) -> dict[str, Any]:
        """The Phase-I classifier: kind, weight (K, C), bias (K,) or None, scale or None."""
        with _damage_is_store_error(self.path):
            head = self._h5()["classifier"]
            kind = _decode("kind", head.attrs["kind"])
            out = {"kind": kind, "weight": head["weight"][()],
                   "bias": head["bias"][()] if "bias" in head else None,
                   "scale": float(head.attrs["scale"]) if kind == "cosine" else None}
        if kind not in ("linear", "cosine"):
            raise StoreError(f"{self.path}: /classifier has kind {kind!r}, not linear or cosine; "
                             f"the store is damaged: re-extract it")
        values = [out["weight"]] + ([out["bias"]] if out["bias"] is not None else [])
        if not all(np.isfinite(v).all() for v in values) or not np.isfinite(out["scale"] or 0.0):
            raise StoreError(f"{self.path}: the Phase-I classifier holds NaN or infinite values; "
                             f"the backbone diverged: retrain it, then re-extract")
        return out

    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = file_sha256(self.path)
        return self._sha256

    def close(self) -> None:
        if self._own_fd and self._pid == os.getpid() and self._fd is not None:
            os.close(self._fd)
        if self._pid == os.getpid() and self._file is not None and self._file.id.valid:
            self._file.close()
        self._file, self._fd, self._own_fd = None, None, False

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, splits={self.splits}, views={self.views})"


def _row_offsets(ds: h5py.Dataset) -> np.ndarray | None:
    """(N,) byte offset of each row's chunk when `ds` has one allocated, unfiltered chunk per
    row of native byte order (so a row's bytes are its values); else None."""
    n = ds.shape[0] if ds.shape else 0
    if (not n or ds.chunks != (1, *ds.shape[1:]) or not ds.dtype.isnative or ds.is_virtual
            or ds.external or ds.id.get_create_plist().get_nfilters() or not hasattr(ds.id, "chunk_iter")):
        return None
    size = ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64))
    offsets = np.full(n, -1, dtype=np.int64)

    def seen(info) -> None:
        if info.size == size and info.byte_offset is not None:
            offsets[info.chunk_offset[0]] = info.byte_offset

    ds.id.chunk_iter(seen)
    return offsets if (offsets >= 0).all() else None


def _read_sorted(ds: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """Rows of `ds` at sorted unique `rows`: one read per run of consecutive rows, or one
    covering read when the rows are dense."""
    out = np.empty((len(rows), *ds.shape[1:]), ds.dtype)
    if not len(rows):
        return out
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    if hi - lo <= 2 * len(rows):  # dense: read the covering range once, pick rows in memory
        block = np.empty((hi - lo, *ds.shape[1:]), ds.dtype)
        ds.read_direct(block, source_sel=np.s_[lo:hi])
        return block[rows - lo]
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1  # starts of runs of consecutive rows
    for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(rows)]):
        first = int(rows[a])
        ds.read_direct(out, source_sel=np.s_[first:first + b - a], dest_sel=np.s_[a:b])
    return out


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:160]


def _check_links(group: h5py.Group, path: Path) -> None:
    """Refuse soft/external links, external raw storage and virtual data in other files."""
    # h5py iterates a group (or attributes) inside its global lock: an exception raised
    # mid-iteration leaves the generator suspended, holding that lock, for as long as the
    # traceback lives (a comprehension's frame keeps its iterator; `raise ... from None` still
    # keeps the first exception as __context__), and every other thread's h5py call (extract's
    # writer) then waits forever. So iterate over a list, made before anything can raise.
    for name in list(group):
        link = group.get(name, getlink=True)
        where = f"{group.name.rstrip('/')}/{name}"
        if not isinstance(link, h5py.HardLink):
            raise StoreError(f"{path}: {where} is a {type(link).__name__}; ltkit stores hold no "
                             f"links, so this file is not one ltkit wrote: re-extract it")
        obj = group[name]
        if isinstance(obj, h5py.Group):
            _check_links(obj, path)
            continue
        if obj.is_virtual and any(src.file_name != "." for src in list(obj.virtual_sources())):
            raise StoreError(f"{path}: {where} is a virtual dataset reading other files; ltkit "
                             f"refuses data from outside the store: re-extract it")
        if obj.id.get_create_plist().get_external_count() > 0:
            raise StoreError(f"{path}: {where} keeps its data in external files; ltkit refuses "
                             f"data from outside the store: re-extract it")


def _validate(f: h5py.File, path: Path, allow_incomplete: bool) -> dict[str, Any]:
    """The decoded root attributes of a valid store; StoreError naming the first problem."""
    try:
        return _check_store(f, path, allow_incomplete)
    except (ValueError, TypeError) as exc:  # an attribute of the wrong kind (bad JSON, a shape of text)
        raise StoreError(f"{path} has a damaged root attribute ({_first_line(exc)}); it is not a "
                         f"store ltkit wrote intact: re-extract it") from None


def _check_store(f: h5py.File, path: Path, allow_incomplete: bool) -> dict[str, Any]:
    if f.attrs.get("schema") is None or _decode("schema", f.attrs["schema"]) != SCHEMA:
        raise StoreError(f"{path} is an HDF5 file but not an ltkit feature store; give a store "
                         f"written by `ltkit extract`")
    version = _decode("schema_version", f.attrs.get("schema_version"))
    if version != SCHEMA_VERSION:
        raise StoreError(f"{path} is an ltkit store of schema version {version}; this ltkit "
                         f"reads version {SCHEMA_VERSION}: re-extract it with this ltkit")
    attrs = {k: _decode(k, v) for k, v in list(f.attrs.items())}  # a list: see _check_links
    missing = [k for k in REQUIRED_ATTRS if k not in attrs]
    if missing:
        raise StoreError(f"{path} lacks root attribute(s) {', '.join(missing)}; it is damaged: "
                         f"re-extract it")
    if not attrs["complete"] and not allow_incomplete:
        raise StoreError(f"{path} is an unfinished extraction; run the same ltkit extract "
                         f"command again to finish it")
    _check_links(f, path)
    c, h, w = (int(v) for v in attrs["feature_shape"])
    k = int(attrs["num_classes"])
    if len(attrs["class_names"]) != k or len(attrs["train_counts"]) != k:
        raise StoreError(f"{path}: class_names / train_counts do not have num_classes={k} "
                         f"entries; the store is damaged: re-extract it")
    expect = {"classifier/weight": ("float32", (k, c))}
    if "classifier" in f and "bias" in f["classifier"]:
        expect["classifier/bias"] = ("float32", (k,))
    splits = [s for s in (*SPLITS, VIEWS) if s in f]
    for need in ("train", "test"):
        if need not in splits:
            raise StoreError(f"{path} has no /{need} split; the store is truncated: re-extract it")
    if (VIEWS in splits) != (int(attrs["train_views"]) > 0):
        raise StoreError(f"{path}: /{VIEWS} does not match train_views={attrs['train_views']}; "
                         f"the store is damaged: re-extract it")
    for split in splits:
        if "labels" not in f[split]:
            raise StoreError(f"{path} has no /{split}/labels; the store is truncated: re-extract it")
        rows = {split: f[split]["labels"].shape[0]}
        layout = StoreLayout(c, h, w, k, rows, tuple(attrs["spatial_splits"]))
        for name, (dtype, shape) in layout.datasets(split).items():
            expect[f"{split}/{name}"] = (dtype, shape)
    for where, (dtype, shape) in expect.items():
        if where not in f or not isinstance(f[where], h5py.Dataset):
            raise StoreError(f"{path} has no dataset /{where}; the store is truncated: re-extract it")
        ds = f[where]
        if ds.dtype != np.dtype(dtype) or ds.shape != shape:
            raise StoreError(f"{path}: /{where} is {ds.dtype} {ds.shape}, expected {dtype} {shape}; "
                             f"the store is damaged: re-extract it")
    for split in splits:  # a label outside 0..K-1 would index past every per-class table
        labels = f[split]["labels"][()]  # (N,) int64: small beside the maps
        bad = labels[(labels < 0) | (labels >= k)]
        if bad.size:
            raise StoreError(f"{path}: /{split}/labels holds {int(bad[0])}, outside the classes "
                             f"0..{k - 1}; the store is damaged: re-extract it")
    return attrs


def open_store(path: str | os.PathLike, *, allow_incomplete: bool = False) -> Store:
    """Open and validate a feature store; StoreError with what to do when it is not one.

    `allow_incomplete` accepts an unfinished extraction (extract's own resume and checks).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise StoreError(f"{path} does not exist; give the path of a feature store written by ltkit extract")
    if not h5py.is_hdf5(path):
        raise StoreError(f"{path} is not an HDF5 file; give a feature store written by ltkit extract")
    return Store(path, allow_incomplete)
