"""Writing a store, crash-safe by construction.

`create_store` allocates every dataset at creation (early allocation, no filters) and writes
every attribute, so the later `StoreWriter.write` calls only fill raw data in place and never
touch HDF5 metadata: a process killed at any moment leaves a file that opens. Compression is
applied afterwards by `pack_store` (ltkit.store.pack), which writes a new file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ltkit.artifacts import write_failure
from ltkit.errors import StoreError
from ltkit.store.guard import first_line, writing
from ltkit.store.schema import REQUIRED_ATTRS, SCHEMA, SCHEMA_VERSION, StoreLayout, chunks, write_attrs


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
    raw = layout.nbytes()
    check_room(path, raw + raw // 32 + (1 << 20))  # + chunk indexes and metadata, generously
    with writing(path):
        _create(path, layout, attrs, classifier, columns)


def check_room(path: Path, nbytes: int) -> None:
    """StoreError when a file of `nbytes` cannot fit: too little free disk, or a smaller file
    size limit (ulimit -f). Checked before HDF5 writes a byte: HDF5 failing half-way through
    creating a file leaves its library state in disarray (the rows written later fail cleanly)."""
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
        write_attrs(f, attrs)
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
                group.create_dataset(name, shape=shape, dtype=dtype, dcpl=dcpl,
                                     chunks=chunks(shape, np.dtype(dtype).itemsize, name))
            _write_columns(group, split, layout.rows[split], columns.get(split, {}))


def _write_columns(group: h5py.Group, split: str, rows: int, columns: dict[str, np.ndarray]) -> None:
    for name, values in columns.items():
        values = np.asarray(values)
        if values.shape[:1] != (rows,):
            raise ValueError(f"column {split}/{name}: {values.shape[0]} rows, expected {rows}")
        if name in group:
            group[name][...] = values
        else:
            group.create_dataset(name, data=values, chunks=chunks(values.shape, values.itemsize, name))


class StoreWriter:
    """Fills the rows of a store made by `create_store`: raw data only, in place."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self._file = h5py.File(self.path, "r+")
        except OSError as exc:
            if write_failure(exc) in ("read-only file system", "permission denied"):
                raise StoreError(f"{self.path} cannot be opened for writing ({first_line(exc)}); "
                                 f"fix the folder's permissions or choose another --out") from None
            raise StoreError(f"{self.path} cannot be opened for writing ({first_line(exc)}); if "
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
                with writing(self.path):
                    ds.write_direct(values, dest_sel=np.s_[start:start + len(values)])

    def flush(self) -> None:
        with writing(self.path):
            self._file.flush()

    def mark_complete(self) -> None:
        """Set the `complete` attribute in place (same type and size: no reallocation)."""
        with writing(self.path):
            self._file.attrs.modify("complete", 1)
            self._file.flush()

    def close(self) -> None:
        if self._file.id.valid:
            with writing(self.path):
                self._file.close()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
