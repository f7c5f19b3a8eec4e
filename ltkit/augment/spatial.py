"""Where FSA's location vectors live: the sources a `FeatureBank` gathers them from.

A source hands out the location vectors of chosen (image, view, location) triples, or the
mean of each row of them (one augmented feature), always the same numbers:
- `TensorSpatial`: every vector resident in one float16 tensor on the bank's device;
- `MappedSpatial`: every vector in a mapped, location-major scratch file (stores larger than
  memory: bounded resident memory, in-memory speed);
- `StoreSpatial`: read from the store per draw (the fallback when no scratch file fits).
"""

from __future__ import annotations

import mmap
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ltkit.errors import DataError

VIEWS_SPLIT = "train/views"  # the store's augmented training views (rows: one (image, view) each)


class SpatialSource(Protocol):
    """Location vectors of chosen (image, view, location) triples."""

    num_locations: int  # L = H * W
    feature_dim: int    # C

    def vectors(self, image: torch.Tensor, view: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        """Same-shaped int64 index tensors (...) -> (..., C) float32 vectors on the bank device."""

    def mean(self, image: torch.Tensor, view: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        """(M, S) index tensors -> (M, C) float32: the mean of each row's S vectors."""

    def maps(self, image: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """(B,) images and views -> (B, L, C) float32: every location vector of each map."""


# Location vectors are held as the store keeps them, float16: half the memory of float32, and
# the gather-and-average below reads half the bytes (on CPUs too: ~2x faster than float32 at
# C = 64 and 2048; the mean's rounding differs from a float32 mean by < 1e-3 relative).
RESIDENT_DTYPE = torch.float16


class TensorSpatial:
    """Location vectors resident in one float16 tensor on the bank's device."""

    def __init__(self, features: torch.Tensor):
        if features.dim() != 4:
            raise DataError(f"spatial features must be (N, V, L, C), got shape {tuple(features.shape)}")
        self.features = features.to(RESIDENT_DTYPE).contiguous()  # (N, V, L, C)
        _, self.num_views, self.num_locations, self.feature_dim = features.shape

    def _rows(self, image: torch.Tensor, view: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        return (image * self.num_views + view) * self.num_locations + loc  # rows of the flat table

    def vectors(self, image: torch.Tensor, view: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        flat = self.features.view(-1, self.feature_dim)  # (N * V * L, C)
        row = self._rows(image, view, loc)  # (...)
        return flat.index_select(0, row.flatten()).view(*row.shape, self.feature_dim).float()

    def mean(self, image: torch.Tensor, view: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        # one fused gather-and-average: no (M, S, C) intermediate
        flat = self.features.view(-1, self.feature_dim)  # (N * V * L, C)
        return F.embedding_bag(self._rows(image, view, loc), flat, mode="mean").float()  # (M, C)

    def maps(self, image: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        # whole maps, one row each: half the time of gathering B * L location rows
        flat = self.features.view(-1, self.num_locations * self.feature_dim)  # (N * V, L * C)
        rows = flat.index_select(0, image * self.num_views + view)  # (B, L * C) float16
        return rows.view(len(image), self.num_locations, self.feature_dim).float()


class StoreSpatial:
    """Location vectors read from the store on demand (bounded memory for stores larger than
    the device): each draw reads the maps it needs once and keeps just the vectors it uses."""

    def __init__(self, store, rows: np.ndarray, device: torch.device, readers: int | None = None,
                 split: str = "train"):
        self.store, self.view_rows, self.device, self.split = store, rows, device, split  # rows: (N, V-1)
        _, c, h, w = store.shape(split, "features")
        self.num_locations, self.feature_dim = h * w, c
        self.readers = readers or min(4, os.cpu_count() or 1)  # threads reading maps at once
        self._pool = ThreadPoolExecutor(self.readers, thread_name_prefix="ltkit-read")

    def _maps(self, image: np.ndarray, view: np.ndarray) -> np.ndarray:
        """(U,) images and views -> (U, C, L) float16 maps, one store read per split."""
        shape = (len(image), self.feature_dim, self.num_locations)
        base = view == 0
        if base.all():  # no stored views drawn: the read is the result, no second copy
            return self.store.read(self.split, "features", image).reshape(shape)
        maps = np.empty(shape, np.float16)
        if base.any():
            maps[base] = self.store.read(self.split, "features", image[base]).reshape(-1, *shape[1:])
        rows = self.view_rows[image[~base], view[~base] - 1]
        maps[~base] = self.store.read(VIEWS_SPLIT, "features", rows).reshape(-1, *shape[1:])
        return maps

    def _table(self, image: torch.Tensor, view: torch.Tensor,
               loc: torch.Tensor) -> tuple[TensorSpatial, torch.Tensor]:
        """The distinct vectors these (image, view, location) triples name as a small resident
        table, and each triple's row in it. Only those vectors are transposed out of the maps'
        (C, L) layout, not whole maps: FSA draws a part of each map's locations. The maps are
        read and gathered in up to `readers` parts at once, by threads (reads and numpy's
        copies run without the GIL): one core copies ~5 GB/s, and a batch reads ~12 MB."""
        V, L = 1 + self.view_rows.shape[1], self.num_locations
        keys, row = torch.unique(((image * V + view) * L + loc).flatten(), return_inverse=True)  # (P,), (M,)
        keys = keys.cpu().numpy()
        pairs, which = np.unique(keys // L, return_inverse=True)  # (U,) (image, view) pairs, (P,)
        vectors = np.empty((len(keys), self.feature_dim), np.float16)  # (P, C)

        def gather(lo: int, hi: int) -> None:  # pairs [lo, hi): their keys are one run of `keys`
            first, last = np.searchsorted(which, [lo, hi])
            maps = self._maps(pairs[lo:hi] // V, pairs[lo:hi] % V)  # (hi - lo, C, L) float16
            vectors[first:last] = maps[which[first:last] - lo, :, keys[first:last] % L]

        bounds = np.linspace(0, len(pairs), min(self.readers, len(pairs)) + 1).astype(int)
        list(self._pool.map(gather, bounds[:-1], bounds[1:]))  # list(): re-raise a reader's error
        table = TensorSpatial(torch.from_numpy(vectors).to(self.device)[:, None, None])  # (P, 1, 1, C)
        return table, row.to(self.device).view(image.shape)

    def vectors(self, image: torch.Tensor, view: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        table, row = self._table(image, view, loc)
        zero = torch.zeros_like(row)
        return table.vectors(row, zero, zero)  # (..., C)

    def mean(self, image: torch.Tensor, view: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        table, row = self._table(image, view, loc)
        zero = torch.zeros_like(row)
        return table.mean(row, zero, zero)  # (M, C)

    def maps(self, image: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        loc = torch.arange(self.num_locations, device=image.device).expand(len(image), -1)  # (B, L)
        return self.vectors(image[:, None].expand_as(loc), view[:, None].expand_as(loc), loc)


class MappedSpatial(TensorSpatial):
    """Every location vector, location-major (N, V, L, C) float16, in a scratch file mapped
    into memory: filled in the one pass `load_bank` makes over the maps anyway, then gathered
    exactly as a resident table is (same code, same numbers) but with no transposition and
    only the drawn vectors read. For stores larger than memory.

    The file (beside the store by default) is unlinked as soon as it is mapped, so it
    vanishes with the process, crash or not; its blocks are reserved up front, so a full disk
    is an OSError here, never a crash later. Its pages count as this process's memory only
    while touched: every RELEASE_BYTES written or gathered they are released (they stay in
    the page cache), so resident memory stays bounded however large the maps. Gathers run on
    the CPU; results go to ``device``."""

    RELEASE_BYTES = 64 << 20

    def __init__(self, shape: tuple[int, int, int, int], folder: str | os.PathLike, device: torch.device):
        nbytes = int(np.prod(shape)) * RESIDENT_DTYPE.itemsize
        fd, name = tempfile.mkstemp(prefix=".ltkit-maps-", suffix=".tmp", dir=folder)
        try:
            os.unlink(name)
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, nbytes)  # ENOSPC now, not SIGBUS on a later write
            else:
                os.ftruncate(fd, nbytes)
            self._map = mmap.mmap(fd, nbytes)  # shared, read-write
            self._map.madvise(mmap.MADV_RANDOM)  # draws touch scattered vectors: no read-around
        finally:
            os.close(fd)
        self.features = torch.from_numpy(np.frombuffer(self._map, np.float16).reshape(shape))  # (N, V, L, C)
        _, self.num_views, self.num_locations, self.feature_dim = shape
        self.device, self._touched = torch.device(device), 0

    def touched(self, nbytes: int) -> None:
        """Count ``nbytes`` of the mapping used; release its pages every RELEASE_BYTES."""
        self._touched += nbytes
        if self._touched >= self.RELEASE_BYTES:
            self._touched = 0
            self._map.madvise(mmap.MADV_DONTNEED)

    def vectors(self, image: torch.Tensor, view: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        out = super().vectors(image.cpu(), view.cpu(), loc.cpu())  # (..., C)
        self.touched(out.numel() * RESIDENT_DTYPE.itemsize)
        return out.to(self.device, non_blocking=True)

    def mean(self, image: torch.Tensor, view: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        out = super().mean(image.cpu(), view.cpu(), loc.cpu())  # (M, C)
        self.touched(loc.numel() * self.feature_dim * RESIDENT_DTYPE.itemsize)
        return out.to(self.device, non_blocking=True)

    def maps(self, image: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        out = super().maps(image.cpu(), view.cpu())  # (B, L, C)
        self.touched(out.numel() * RESIDENT_DTYPE.itemsize)
        return out.to(self.device, non_blocking=True)
