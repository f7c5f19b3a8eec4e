"""The store's format: names, layout, chunking, and how root attributes are encoded (docs/store.md).

Root attributes hold plain values. HDF5 keeps attributes in the object header, whose
messages are limited to 64 KiB under ``libver="earliest"`` (which the writer uses for crash
safety): a string array of 4,096 class names (16 bytes per entry) no longer fits. So an array
attribute of more than `ATTR_ARRAY_MAX` entries is written as the dataset ``/attrs/NAME``
instead, with the same encoding; readers look there when the root attribute is absent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from ltkit import choices

SCHEMA = "ltkit-feature-store"
SCHEMA_VERSION = 1
SPLITS = choices.STORE_SPLITS  # top-level splits; train and test are required
VIEWS = "train/views"  # augmented training views: a split of V * N rows, view-major
COMPRESSIONS = choices.COMPRESSIONS
JSON_ATTRS = ("dataset", "options", "lineage")  # root attributes stored as JSON text
REQUIRED_ATTRS = ("schema", "schema_version", "complete", "class_names", "train_counts",
                  "num_classes", "feature_shape", "arch", "layer", "head", "dataset",
                  "backbone_path", "backbone_sha256", "ltkit_version", "options", "seed",
                  "lineage", "train_views", "spatial_splits")
ATTR_GROUP = "attrs"  # /attrs/NAME: a root attribute too large for the object header
ATTR_ARRAY_MAX = 2048  # array attributes with more entries are datasets in ATTR_GROUP
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
UNIT_RANGE = ("cams",)  # arrays whose every value lies in [0, 1], checked as they are read


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

    def nbytes(self) -> int:
        """Bytes of every array's raw data."""
        return sum(int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
                   for split in self.rows for dtype, shape in self.datasets(split).values())


def chunks(shape: tuple[int, ...], itemsize: int, name: str) -> tuple[int, ...] | None:
    """One sample per chunk for feature maps; about ROW_CHUNK_BYTES of rows for the rest."""
    if shape[0] == 0:
        return None  # an empty dataset cannot be chunked; contiguous and zero bytes
    row_bytes = itemsize * int(np.prod(shape[1:], dtype=np.int64))
    rows = 1 if name == "features" else max(1, min(shape[0], ROW_CHUNK_BYTES // max(row_bytes, 1)))
    return (rows, *shape[1:])


def encode(value: Any) -> Any:
    """A root attribute's value as HDF5 holds it: dicts as JSON text, lists as arrays."""
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return np.array(value, dtype=h5py.string_dtype())  # empty list -> empty str array
    if isinstance(value, (list, tuple)):
        return np.asarray(value, dtype=np.int64)
    return value


def decode(name: str, value: Any) -> Any:
    """The plain value of an attribute as read (JSON attributes decoded; ValueError if bad)."""
    if isinstance(value, bytes):
        value = value.decode()
    if name in JSON_ATTRS and isinstance(value, str):
        return json.loads(value)
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return decode(name, value[()])
    if isinstance(value, np.ndarray) and value.ndim > 1:
        return value.tolist()  # no attribute of a store is 2-D: validation refuses it
    if isinstance(value, np.ndarray):
        return [v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v
                for v in value]
    return value.item() if isinstance(value, np.generic) else value


def write_attrs(f: h5py.File, attrs: dict[str, Any]) -> None:
    """Set the root attributes; large arrays go to datasets in ATTR_GROUP."""
    for key, value in attrs.items():
        value = encode(value)
        if isinstance(value, np.ndarray) and value.size > ATTR_ARRAY_MAX:
            f.require_group(ATTR_GROUP).create_dataset(key, data=value)
        else:
            f.attrs[key] = value


def read_attrs(f: h5py.File) -> dict[str, Any]:
    """Every root attribute decoded, those kept in ATTR_GROUP included (ValueError on bad JSON)."""
    raw = dict(list(f.attrs.items()))  # a list first: see validate.check_links
    group = f.get(ATTR_GROUP)
    if isinstance(group, h5py.Group):
        for key in list(group):
            obj = group.get(key)
            if key not in raw and isinstance(obj, h5py.Dataset):
                raw[key] = obj[()]
    return {k: decode(k, v) for k, v in raw.items()}
