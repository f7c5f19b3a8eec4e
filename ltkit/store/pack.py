"""Compressing a finished store: a new file with lzf or gzip (and byte shuffle) on every array."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from ltkit.store.guard import writing
from ltkit.store.schema import COMPRESSIONS, READ_BLOCK_BYTES


def pack_store(src: str | os.PathLike, dst: str | os.PathLike, compression: str) -> None:
    """Copy a finished store into a new file with `compression` (lzf | gzip) on every array."""
    if compression not in COMPRESSIONS[1:]:
        raise ValueError(f"pack_store: compression must be lzf or gzip, got {compression!r}")
    with writing(Path(dst)), h5py.File(src, "r") as fin, h5py.File(dst, "w", libver="earliest") as fout:
        _copy(fin, fout, compression)


def _copy(gin: h5py.Group, gout: h5py.Group, compression: str) -> None:
    gout.attrs.update(gin.attrs)
    for name, obj in list(gin.items()):  # a list: see validate.check_links
        if isinstance(obj, h5py.Group):
            _copy(obj, gout.create_group(name), compression)
            continue
        ds = gout.create_dataset(name, shape=obj.shape, dtype=obj.dtype, chunks=obj.chunks,
                                 compression=compression if obj.chunks else None,
                                 shuffle=bool(obj.chunks))
        ds.attrs.update(obj.attrs)
        step = max(1, READ_BLOCK_BYTES // max(1, obj.dtype.itemsize * int(np.prod(obj.shape[1:]))))
        for start in range(0, obj.shape[0] if obj.shape else 1, step):
            ds[start:start + step] = obj[start:start + step] if obj.shape else obj[()]
