"""Reading rows of a dataset: through HDF5, or, for maps stored one unfiltered chunk per sample,
straight from the file's bytes.

HDF5 costs ~10 us per chunk, which makes reading small maps ~10x slower than the disk; a
memory map costs a page fault per 4 KiB and counts the pages it touched as this process's
memory. So maps are read with one `preadv` per run of adjacent chunks into the result.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from ltkit.errors import StoreError

PIECE_BYTES = 4 << 20  # channels_last: rows read per step before they are transposed


def row_offsets(ds: h5py.Dataset) -> np.ndarray | None:
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


def read_sorted(ds: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """Rows of `ds` at sorted unique `rows` through HDF5: one read per run of consecutive rows,
    or one covering read when the rows are dense."""
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


def read_chunks(fd: int, ds: h5py.Dataset, starts: np.ndarray, channels_last: bool, path: Path) -> np.ndarray:
    """Rows of `ds` whose chunks start at byte offsets `starts` (n,), read from descriptor `fd`:
    (n, C, H, W), or (n, H, W, C) with ``channels_last``."""
    n, row = len(starts), ds.shape[1:]
    size = ds.dtype.itemsize * int(np.prod(row))
    if channels_last:  # rows as (C, H*W) in the file, (H*W, C) in `out`: read, then transpose
        out = np.empty((n, *row[1:], row[0]), ds.dtype)
        dest = out.reshape(n, -1, row[0])  # (n, L, C)
        piece = max(1, PIECE_BYTES // size)
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
            _pread(fd, target, int(starts[a]), path, ds.name)
            if channels_last:
                dest[a:b] = target.transpose(0, 2, 1)
    return out


def _pread(fd: int, target: np.ndarray, offset: int, path: Path, where: str) -> None:
    """Fill ``target`` (contiguous) with the file's bytes from ``offset``."""
    view = memoryview(target.reshape(-1).view(np.uint8))
    done = 0
    while done < len(view):  # a regular file reads short only at its end
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            raise StoreError(f"{path} ends inside /{where.lstrip('/')}; it is truncated: re-extract it")
        done += got
