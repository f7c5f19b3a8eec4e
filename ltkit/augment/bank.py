"""The feature bank: what Phase-II augmenters draw from, held as tensors on one device.

A bank holds, for every training image, its label, the pooled feature of each of its V views
(V = 1 when the store has no stored train-time views; with views, the un-augmented extraction
is view 0 and the stored views follow), and, for the spatial augmenters, each view's own-label
CAM per location and which location vectors are not all-zero. Location vectors themselves are
handed out on demand by a `SpatialSource` (`ltkit.augment.spatial`): all of them resident on
the device when they fit, else in a mapped scratch copy or read from the store (bounded memory).

Draws are vectorised: a tail/head/class draw turns a vector of uniforms from the caller's
`torch.Generator` into sample indices, never a Python loop per sample.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ltkit import choices, console
from ltkit.augment.spatial import RESIDENT_DTYPE, VIEWS_SPLIT, MappedSpatial, SpatialSource, StoreSpatial, TensorSpatial
from ltkit.errors import ConfigError, DataError, StoreError

__all__ = ["DRAWS", "FeatureBank", "MappedSpatial", "SpatialSource", "StoreSpatial", "TensorSpatial",
           "VIEWS_SPLIT", "bank_from_tensors", "load_bank", "to_locations", "view_rows"]

DRAWS = choices.DRAWS  # instance: uniform over a pool's samples; class: class first
READ_BLOCK_BYTES = 16 << 20  # maps read per step while a bank is built: bounded memory


def to_locations(maps: torch.Tensor) -> torch.Tensor:
    """(..., C, H, W) feature maps -> (..., L, C) location vectors, L = H * W (row-major)."""
    return maps.flatten(-2).transpose(-1, -2)  # (..., L, C)


@dataclass
class FeatureBank:
    labels: torch.Tensor               # (N,) int64 class of each training image
    pooled: torch.Tensor               # (N, V, C) float32 pooled feature of each view
    head_classes: torch.Tensor         # (H,) int64 head classes (table order)
    tail_classes: torch.Tensor         # (T,) int64 tail classes (table order)
    confusing: torch.Tensor            # (T, Nf) int64 row i: confusing classes of tail_classes[i]
    num_classes: int                   # K
    cams: torch.Tensor | None = None   # (N, V, L) float32 own-label CAM in [0, 1]; spatial banks only
    nonzero: torch.Tensor | None = None  # (N, V, L) bool: location vector is not all-zero
    spatial: SpatialSource | None = None  # location vectors on demand; spatial banks only
    # derived in __post_init__
    tail_row: torch.Tensor = field(init=False)       # (K,) row of each class in `confusing`, -1 for head
    class_counts: torch.Tensor = field(init=False)   # (K,) training images per class
    class_order: torch.Tensor = field(init=False)    # (N,) image indices grouped by class
    class_starts: torch.Tensor = field(init=False)   # (K,) first slot of each class in class_order
    tail_pool: torch.Tensor = field(init=False)      # (P_t,) images of tail classes
    head_pool: torch.Tensor = field(init=False)      # (P_h,) images of head classes

    def __post_init__(self) -> None:
        dev = self.labels.device
        K = self.num_classes
        self.class_counts = torch.bincount(self.labels, minlength=K)  # (K,)
        self.class_order = torch.argsort(self.labels, stable=True)  # (N,)
        self.class_starts = torch.cumsum(self.class_counts, 0) - self.class_counts  # (K,)
        self.tail_row = torch.full((K,), -1, dtype=torch.long, device=dev)
        self.tail_row[self.tail_classes] = torch.arange(len(self.tail_classes), device=dev)
        is_tail = self.tail_row[self.labels] >= 0  # (N,)
        is_head = torch.isin(self.labels, self.head_classes)  # (N,)
        self.tail_pool = torch.nonzero(is_tail).flatten()  # (P_t,)
        self.head_pool = torch.nonzero(is_head).flatten()  # (P_h,)
        if self.tail_pool.numel() == 0 or self.head_pool.numel() == 0:
            raise DataError("the head/tail split leaves no training image on one side; "
                            "rebuild the confusing-class table with another --head-ratio")
        used = torch.cat([self.tail_classes, self.head_classes, self.confusing.flatten()])
        empty = used[self.class_counts[used] == 0]
        if empty.numel():
            raise DataError(f"class {int(empty[0])} is in the table but has no training image "
                            "in the store; rebuild the table from this store")

    @property
    def device(self) -> torch.device:
        return self.labels.device

    @property
    def num_views(self) -> int:
        return self.pooled.shape[1]

    @property
    def feature_dim(self) -> int:
        return self.pooled.shape[2]

    @property
    def has_spatial(self) -> bool:
        return self.spatial is not None and self.cams is not None and self.nonzero is not None

    # ---- vectorised draws -------------------------------------------------------------
    def draw_views(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n,) a view per drawn image, uniform over the V views (all 0 without views)."""
        if self.num_views == 1:
            return torch.zeros(n, dtype=torch.long, device=self.device)
        return torch.randint(self.num_views, (n,), generator=generator, device=self.device)

    def draw_from_classes(self, classes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(M,) classes -> (M,) one image of each, uniform within its class (with repetition)."""
        counts = self.class_counts[classes]  # (M,)
        u = torch.rand(classes.shape, generator=generator, device=self.device, dtype=torch.float64)
        offset = torch.minimum((u * counts).long(), counts - 1)  # (M,)
        return self.class_order[self.class_starts[classes] + offset]  # (M,)

    def _draw(self, pool: torch.Tensor, classes: torch.Tensor, n: int, mode: str,
              generator: torch.Generator) -> torch.Tensor:
        if mode == "instance":
            pick = torch.randint(pool.numel(), (n,), generator=generator, device=self.device)
            return pool[pick]  # (n,)
        if mode == "class":
            pick = torch.randint(classes.numel(), (n,), generator=generator, device=self.device)
            return self.draw_from_classes(classes[pick], generator)  # (n,)
        raise ConfigError(f"unknown draw {mode!r}; valid: {', '.join(DRAWS)}")

    def draw_tail(self, n: int, mode: str, generator: torch.Generator) -> torch.Tensor:
        """(n,) tail images: uniform over tail images (instance) or over tail classes (class)."""
        return self._draw(self.tail_pool, self.tail_classes, n, mode, generator)

    def draw_head(self, n: int, mode: str, generator: torch.Generator) -> torch.Tensor:
        """(n,) head images: uniform over head images (instance) or over head classes (class)."""
        return self._draw(self.head_pool, self.head_classes, n, mode, generator)


def bank_from_tensors(*, labels: torch.Tensor, pooled: torch.Tensor, head_classes, tail_classes,
                      confusing, num_classes: int, features: torch.Tensor | None = None,
                      cams: torch.Tensor | None = None,
                      device: torch.device | str = "cpu") -> FeatureBank:
    """A bank from in-memory tensors (tests, benchmarks, notebooks).

    ``pooled`` is (N, C) or (N, V, C); ``features`` (N, C, H, W) or (N, V, C, H, W) maps and
    ``cams`` (N, H, W) or (N, V, H, W) own-label CAMs; views are added as a dimension of 1.
    """
    device = torch.device(device)
    if pooled.dim() == 2:
        pooled = pooled[:, None]  # (N, 1, C)
    spatial = nonzero = None
    if features is not None:
        if cams is None:
            raise ConfigError("spatial features need their CAMs too")
        if features.dim() == 4:
            features, cams = features[:, None], cams[:, None]  # (N, 1, C, H, W), (N, 1, H, W)
        locs = to_locations(features).to(device)  # (N, V, L, C)
        nonzero = locs.ne(0).any(-1)  # (N, V, L)
        cams = cams.flatten(-2).to(device, torch.float32)  # (N, V, L)
        spatial = TensorSpatial(locs)
    as_long = lambda x: torch.as_tensor(x, dtype=torch.long).to(device)  # noqa: E731
    return FeatureBank(labels=as_long(labels), pooled=pooled.to(device, torch.float32),
                       head_classes=as_long(head_classes), tail_classes=as_long(tail_classes),
                       confusing=as_long(confusing).reshape(len(tail_classes), -1),
                       num_classes=num_classes, cams=cams, nonzero=nonzero, spatial=spatial)


# ---- from a feature store ----------------------------------------------------------------

def view_rows(store, num_images: int) -> np.ndarray:
    """(N, V-1) row of /train/views holding stored view v of image n (view 0 is /train itself)."""
    if not store.views:
        return np.zeros((num_images, 0), dtype=np.int64)
    sample = store.read(VIEWS_SPLIT, "sample").astype(np.int64)  # (R,)
    view = store.read(VIEWS_SPLIT, "view").astype(np.int64)  # (R,)
    rows = np.full((num_images, store.views), -1, dtype=np.int64)
    rows[sample, view] = np.arange(len(sample))
    if (rows < 0).any():
        raise StoreError(f"{store.path}: /{VIEWS_SPLIT} lacks some (image, view) rows; the store "
                         "is damaged: re-extract it")
    return rows


def _by_view(store, name: str, with_views: bool, split: str = "train", **read):
    """Yield (images (b,), view (scalar), block) over /split and, with views, /train/views;
    ``read``: options of `Store.iter_chunks`."""
    for first, block in store.iter_chunks(split, name, **read):
        yield np.arange(first, first + len(block)), 0, block
    if not with_views:
        return
    sample = store.read(VIEWS_SPLIT, "sample").astype(np.int64)
    view = store.read(VIEWS_SPLIT, "view").astype(np.int64)
    for first, block in store.iter_chunks(VIEWS_SPLIT, name, **read):
        images, views = sample[first:first + len(block)], view[first:first + len(block)] + 1
        for v in np.unique(views):  # a loop over the few views in a block, not over images
            yield images[views == v], int(v), block[views == v]


def _finite(block: np.ndarray) -> bool:
    """No NaN or inf in ``block``; float16 through its exponent bits (~10x numpy's isfinite)."""
    if block.dtype == np.float16:
        return bool(((np.ascontiguousarray(block).view(np.uint16) & 0x7C00) != 0x7C00).all())
    return bool(np.isfinite(block).all())


def _mapped_spatial(shape, folder, device) -> MappedSpatial | None:
    """A `MappedSpatial` in ``folder``; None (read from the store instead) when the folder
    cannot hold it."""
    try:
        return MappedSpatial(shape, folder, device)
    except OSError as exc:
        console.warn(f"no room for a {np.prod(shape) * 2 / 2**30:.1f} GiB scratch copy of the maps "
                     f"in {folder} ({exc.strerror or exc}); reading them from the store instead (slower)")
        return None


def load_bank(store, table, *, device: torch.device, spatial: bool, use_views: bool = True,
              resident_bytes: float = 4 * 2**30, scratch: bool = True,
              scratch_dir: str | os.PathLike | None = None, split: str = "train") -> FeatureBank:
    """A bank from an open store and a confusing-class table (a `ltkit.confusing_table.ConfusingTable`).

    ``split``: the images it holds (train; or bound, the balanced held-out split: no views).

    ``spatial``: also load CAMs and location vectors (FSA). The vectors are held on ``device``
    (float16) when they take at most ``resident_bytes``; otherwise, with ``scratch``, in a
    mapped scratch file in ``scratch_dir`` (default: the store's folder; `MappedSpatial`),
    else (or when that folder has no room) they stay in the store and each draw reads its
    rows (`StoreSpatial`). Every path gives the same numbers. ``use_views``:
    draw a random stored view per image when the store has views (view 0 is the
    un-augmented extraction).
    """
    labels = torch.from_numpy(store.read(split, "labels").astype(np.int64))  # (N,)
    n = labels.numel()
    rows = view_rows(store, n) if use_views and split == "train" else np.zeros((n, 0), dtype=np.int64)
    V = 1 + rows.shape[1]
    with_views = V > 1
    pooled = torch.empty(n, V, store.shape(split, "pooled")[1], device=device)  # (N, V, C)
    for images, v, block in _by_view(store, "pooled", with_views, split):
        pooled[torch.from_numpy(images).to(device), v] = torch.from_numpy(block).to(device)
    cams = nonzero = source = None
    if spatial:
        for name in ("features", "cams"):
            if not store.has(split, name):
                raise ConfigError(f"{store.path} has no /{split}/{name}: spatial augmentation and "
                                  f"spatial heads need the {split} split's feature maps; re-extract with them")
        _, c, h, w = store.shape(split, "features")
        L = h * w
        cams = torch.empty(n, V, L, device=device)  # (N, V, L)
        for images, v, block in _by_view(store, "cams", with_views, split):
            cams[torch.from_numpy(images).to(device), v] = torch.from_numpy(
                block.reshape(len(block), L).astype(np.float32)).to(device)
        resident = n * V * L * c * RESIDENT_DTYPE.itemsize <= resident_bytes
        nonzero = torch.empty(n, V, L, dtype=torch.bool, device=device)  # (N, V, L)
        mapped = None if resident or not scratch else \
            _mapped_spatial((n, V, L, c), scratch_dir or store.path.parent, device)
        locs = torch.empty(n, V, L, c, dtype=RESIDENT_DTYPE, device=device) if resident else \
            None if mapped is None else mapped.features
        for images, v, block in _by_view(store, "features", with_views, split, block_bytes=READ_BLOCK_BYTES,
                                         channels_last=True):  # block: (b, H, W, C) float16
            if not _finite(block):  # the store's reads skip this check for the maps
                raise StoreError(f"{store.path}: the training feature maps hold NaN or infinite "
                                 "values; the store is damaged: re-extract it (--precision fp32)")
            at = torch.from_numpy(images)
            maps = torch.from_numpy(block).reshape(len(block), L, c)  # (b, L, C)
            nonzero[at.to(device), v] = maps.ne(0).any(-1).to(device)
            if locs is not None:
                locs[at.to(locs.device), v] = maps.to(locs.device)
            if mapped is not None:
                mapped.touched(block.nbytes)
        source = TensorSpatial(locs) if resident else mapped or StoreSpatial(store, rows, device, split=split)
    as_long = lambda key: torch.as_tensor(getattr(table, key), dtype=torch.long, device=device)  # noqa: E731
    return FeatureBank(labels=labels.to(device), pooled=pooled, head_classes=as_long("head_classes"),
                       tail_classes=as_long("tail_classes"), confusing=as_long("confusing"),
                       num_classes=len(store.class_names), cams=cams, nonzero=nonzero,
                       spatial=source)


_last: dict[str, FeatureBank] = {}  # the last resident bank `resident_bank` built, by its key


def resident_bank(store, table, *, device: torch.device, spatial: bool, **options) -> FeatureBank:
    """`load_bank`, remembered for the next call on the same data with the same options when
    the bank is resident (nothing of it reads the store later): runs one after another in a
    process (a sweep, `ltkit.augment_auto`'s trials) load the maps once; a spatial bank also
    serves a request without maps. The key holds the store's path, size and change time and
    the table's split, so a changed store is read again."""
    st = os.stat(store.path)
    split = [] if table is None else [table.tail_classes.tolist(), table.confusing.tolist()]
    key = json.dumps([str(store.path), st.st_size, st.st_mtime_ns, split, str(device), options], default=str)
    cached = _last.get(key)
    if cached is not None and (cached.spatial is not None or not spatial):
        return cached
    bank = load_bank(store, table, device=device, spatial=spatial, **options)
    _last.clear()  # one bank at a time: the maps can be large
    if bank.spatial is None or isinstance(bank.spatial, TensorSpatial):
        _last[key] = bank
    return bank
