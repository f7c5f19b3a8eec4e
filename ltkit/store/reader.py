"""Reading a store: `open_store(path)` validates the file and returns a `Store` that hands out
numpy arrays, never h5py objects.

A `Store` opens its file per process: used after a fork (a DataLoader worker) or unpickled in
another process, it reopens the file there instead of sharing the parent's handle (sharing it
across a fork is what corrupts reads). Every float block but the maps is checked for NaN and
infinities as it is read, and CAMs for values outside [0, 1]: per block, no extra pass.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ltkit.artifacts import file_sha256
from ltkit.errors import StoreError
from ltkit.store.fastread import read_chunks, read_sorted, row_offsets
from ltkit.store.guard import damage_is_store_error, open_for_reading
from ltkit.store.schema import READ_BLOCK_BYTES, SPLITS, UNCHECKED, UNIT_RANGE, decode
from ltkit.store.validate import is_store, validate


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
            with damage_is_store_error(path):
                self.attrs = validate(self._h5(), path, allow_incomplete)
                self.splits: list[str] = [s for s in SPLITS if s in self._h5()]
        except BaseException:
            self.close()
            raise
        self.class_names: list[str] = list(self.attrs["class_names"])
        self.train_counts = np.asarray(self.attrs["train_counts"], dtype=np.int64)  # (K,), = /train/labels'
        self.views: int = int(self.attrs["train_views"])  # augmented views per training image

    def _h5(self) -> h5py.File:
        """This process's handle: reopened after a fork or an unpickle, never shared."""
        if self._file is None or self._pid != os.getpid() or not self._file.id.valid:
            self._file = open_for_reading(self.path)
            self._offsets, self._fd, self._own_fd = {}, None, False
            self._pid = os.getpid()
        return self._file

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_file": None, "_offsets": {}, "_fd": None, "_own_fd": False}

    def _ds(self, split: str, name: str) -> h5py.Dataset:
        if not self.has(split, name):
            raise StoreError(f"{self.path} has no /{split}/{name} (maps are kept for: "
                             f"{', '.join(self.attrs['spatial_splits']) or 'no split'}); "
                             f"re-extract with the split and options you need")
        with damage_is_store_error(self.path):
            return self._h5()[f"{split}/{name}"]

    def has(self, split: str, name: str) -> bool:
        with damage_is_store_error(self.path):
            return f"{split}/{name}" in self._h5()

    def shape(self, split: str, name: str) -> tuple[int, ...]:
        return tuple(self._ds(split, name).shape)

    def dtype(self, split: str, name: str) -> np.dtype:
        return self._ds(split, name).dtype

    def names(self, split: str) -> list[str]:
        """The arrays of `split` (subgroups such as `views` left out)."""
        with damage_is_store_error(self.path):
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
        """``block`` of ``ds``, refused when a float array (all but the maps) holds NaN or inf,
        or CAMs fall outside [0, 1]: such values would flow silently into every later number."""
        name = ds.name.rsplit("/", 1)[-1]
        if block.dtype.kind != "f" or name in UNCHECKED:
            return block
        if not np.isfinite(block).all():
            raise StoreError(f"{self.path}: {ds.name} holds NaN or infinite values; the store is "
                             f"damaged or its backbone diverged: re-extract it (--precision fp32)")
        if name in UNIT_RANGE and block.size and (block.min() < 0 or block.max() > 1):
            low, high = float(block.min()), float(block.max())
            raise StoreError(f"{self.path}: {ds.name} holds values from {low:g} to {high:g}, outside "
                             f"[0, 1] (CAMs are min-max normalised per sample); the store is "
                             f"damaged: re-extract it")
        return block

    def _read_rows(self, ds: h5py.Dataset, rows: np.ndarray, channels_last: bool = False) -> np.ndarray:
        """Rows of `ds` at sorted unique `rows` (see ltkit.store.fastread)."""
        with damage_is_store_error(self.path):
            if ds.name not in self._offsets:
                self._offsets[ds.name] = row_offsets(ds)
            offsets = self._offsets[ds.name]
            if offsets is None or not len(rows):
                block = read_sorted(ds, rows)
                return np.ascontiguousarray(np.moveaxis(block, 1, -1)) if channels_last else block
            return read_chunks(self._descriptor(), ds, offsets[rows], channels_last, self.path)

    def _descriptor(self) -> int:
        """The descriptor of the very file h5py has open (not its path: a store replaced by a
        rename while it is open is still read whole from the old file)."""
        if self._fd is None:
            try:
                self._fd = int(self._h5().id.get_vfd_handle())
            except (TypeError, ValueError, OSError):  # another file driver: open by path
                self._fd, self._own_fd = os.open(self.path, os.O_RDONLY), True
        return self._fd

    def classifier(self) -> dict[str, Any]:
        """The Phase-I classifier: kind, weight (K, C), bias (K,) or None, scale or None."""
        with damage_is_store_error(self.path):
            head = self._h5()["classifier"]
            kind = decode("kind", head.attrs["kind"])
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

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, splits={self.splits}, views={self.views})"


def open_store(path: str | os.PathLike, *, allow_incomplete: bool = False) -> Store:
    """Open and validate a feature store; StoreError with what to do when it is not one.

    `allow_incomplete` accepts an unfinished extraction (extract's own resume and checks).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise StoreError(f"{path} does not exist; give the path of a feature store written by ltkit extract")
    if not is_store(path):
        raise StoreError(f"{path} is not an HDF5 file; give a feature store written by ltkit extract")
    return Store(path, allow_incomplete)


def earlier_store(path: str | os.PathLike) -> bool:
    """True when `path` is an ltkit feature store, complete or not: what ``extract --force``
    may replace (`ltkit.artifacts.check_output`'s ``replaces``)."""
    try:
        with open_store(path, allow_incomplete=True):
            return True
    except StoreError:
        return False
