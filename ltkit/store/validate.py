"""Validating a store on open: schema, root attributes, datasets, labels; StoreError on the first problem.

Every check is one line that says what is wrong and what to do. The root attributes are
checked for their type, length and range before anyone uses them, so a damaged attribute
is refused here and never reaches a report (a traceback) or a number (a wrong accuracy):
``train_counts`` in particular must equal the counts of ``/train/labels``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ltkit.errors import StoreError
from ltkit.store.guard import first_line
from ltkit.store.schema import (
    JSON_ATTRS,
    REQUIRED_ATTRS,
    SCHEMA,
    SCHEMA_VERSION,
    SPATIAL,
    SPLITS,
    VIEWS,
    StoreLayout,
    decode,
    read_attrs,
)

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
STRINGS = ("arch", "layer", "head", "backbone_path", "backbone_sha256", "ltkit_version")
COUNTS = {"complete": (0, 1), "num_classes": (1, None), "train_views": (0, None), "seed": (0, None)}


def is_store(path: str | os.PathLike) -> bool:
    """Whether `path` is an HDF5 file (what ltkit's stores are): the input kinds are told apart
    by this; `open_store` then validates it."""
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == HDF5_SIGNATURE
    except OSError:
        return False


def check_links(group: h5py.Group, path: Path) -> None:
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
            check_links(obj, path)
            continue
        if obj.is_virtual and any(src.file_name != "." for src in list(obj.virtual_sources())):
            raise StoreError(f"{path}: {where} is a virtual dataset reading other files; ltkit "
                             f"refuses data from outside the store: re-extract it")
        if obj.id.get_create_plist().get_external_count() > 0:
            raise StoreError(f"{path}: {where} keeps its data in external files; ltkit refuses "
                             f"data from outside the store: re-extract it")


def validate(f: h5py.File, path: Path, allow_incomplete: bool) -> dict[str, Any]:
    """The decoded root attributes of a valid store; StoreError naming the first problem."""
    _check_schema(f, path)
    try:
        attrs = read_attrs(f)
    except (ValueError, TypeError) as exc:  # bad JSON, undecodable text
        raise StoreError(f"{path} has a damaged root attribute ({first_line(exc)}); it is not a "
                         f"store ltkit wrote intact: re-extract it") from None
    missing = [k for k in REQUIRED_ATTRS if k not in attrs]
    if missing:
        raise StoreError(f"{path} lacks root attribute(s) {', '.join(missing)}; it is damaged: "
                         f"re-extract it")
    check_attrs(attrs, path)
    if not attrs["complete"] and not allow_incomplete:
        raise StoreError(f"{path} is an unfinished extraction; run the same ltkit extract "
                         f"command again to finish it")
    check_links(f, path)
    splits = _check_datasets(f, path, attrs)
    _check_labels(f, path, attrs, splits)
    return attrs


def _check_schema(f: h5py.File, path: Path) -> None:
    schema = f.attrs.get("schema")
    if schema is None or not isinstance(schema, (str, bytes)) or decode("schema", schema) != SCHEMA:
        raise StoreError(f"{path} is an HDF5 file but not an ltkit feature store; give a store "
                         f"written by `ltkit extract`")
    version = decode("schema_version", f.attrs.get("schema_version"))
    if not _is_int(version):
        raise StoreError(f"{path} has schema_version {version!r} ({_kind(version)}), not an integer; "
                         f"it is damaged or not written by ltkit: re-extract it")
    if version != SCHEMA_VERSION:
        raise StoreError(f"{path} is an ltkit store of schema version {version}; this ltkit "
                         f"reads version {SCHEMA_VERSION}: re-extract it with this ltkit")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return f"a non-finite {type(value).__name__}"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _bad(path: Path, name: str, value: Any, expected: str) -> StoreError:
    if isinstance(value, list):  # e.g. "a list of 6 ints"
        shown = f"a list of {len(value)}" + (f" {type(value[0]).__name__}s" if value else "")
    else:
        shown = f"{repr(value)[:60]} ({_kind(value)})"
    return StoreError(f"{path} has a damaged root attribute {name} = {shown}; expected {expected}: "
                      f"re-extract it")


def check_attrs(attrs: dict[str, Any], path: Path) -> None:
    """Type, length and range of every required root attribute (docs/store.md)."""
    for name, (low, high) in COUNTS.items():
        value = attrs[name]
        if not _is_int(value) or value < low or (high is not None and value > high):
            raise _bad(path, name, value, f"an integer >= {low}" + (f" and <= {high}" if high is not None else ""))
    for name in STRINGS:
        if not isinstance(attrs[name], str):
            raise _bad(path, name, attrs[name], "a string")
    for name in JSON_ATTRS:
        if not isinstance(attrs[name], dict):
            raise _bad(path, name, attrs[name], "JSON text of an object")
    k = attrs["num_classes"]
    names, counts, shape, spatial = (attrs[n] for n in ("class_names", "train_counts", "feature_shape",
                                                        "spatial_splits"))
    if not isinstance(names, list) or len(names) != k or not all(isinstance(n, str) for n in names):
        raise _bad(path, "class_names", names, f"{k} strings (num_classes)")
    if not isinstance(counts, list) or len(counts) != k or not all(_is_int(c) and c >= 0 for c in counts):
        raise _bad(path, "train_counts", counts, f"{k} integers >= 0 (num_classes)")
    if not isinstance(shape, list) or len(shape) != 3 or not all(_is_int(s) and s >= 1 for s in shape):
        raise _bad(path, "feature_shape", shape, "3 integers >= 1 (C, H, W)")
    if not isinstance(spatial, list) or not all(isinstance(s, str) and s in SPLITS for s in spatial):
        raise _bad(path, "spatial_splits", spatial, f"a list of split names ({', '.join(SPLITS)})")


def _check_datasets(f: h5py.File, path: Path, attrs: dict[str, Any]) -> list[str]:
    """Every dataset the attributes promise, of its dtype and shape; the splits present."""
    (c, h, w), k = attrs["feature_shape"], attrs["num_classes"]
    expect = {"classifier/weight": ("float32", (k, c))}
    if _classifier_kind(f, path) == "linear":  # a cosine head has no bias
        expect["classifier/bias"] = ("float32", (k,))
    splits = [s for s in (*SPLITS, VIEWS) if s in f]
    for need in ("train", "test"):
        if need not in splits:
            raise StoreError(f"{path} has no /{need} split; the store is truncated: re-extract it")
    if (VIEWS in splits) != (attrs["train_views"] > 0):
        raise StoreError(f"{path}: /{VIEWS} does not match train_views={attrs['train_views']}; "
                         f"the store is damaged: re-extract it")
    for split in splits:
        labels = f[split].get("labels")
        if not isinstance(labels, h5py.Dataset) or labels.ndim != 1:
            raise StoreError(f"{path} has no /{split}/labels of one label per row; the store is "
                             f"damaged or truncated: re-extract it")
        layout = StoreLayout(c, h, w, k, {split: labels.shape[0]}, tuple(attrs["spatial_splits"]))
        for name, spec in layout.datasets(split).items():
            expect[f"{split}/{name}"] = spec
        unlisted = [name for name in SPATIAL if name in f[split] and f"{split}/{name}" not in expect]
        if unlisted:
            raise StoreError(f"{path}: /{split}/{unlisted[0]} is there but spatial_splits "
                             f"({', '.join(attrs['spatial_splits']) or 'none'}) does not list {split}; "
                             f"the store is damaged: re-extract it")
    for where, (dtype, shape) in expect.items():
        if where not in f or not isinstance(f[where], h5py.Dataset):
            raise StoreError(f"{path} has no dataset /{where}; the store is truncated: re-extract it")
        ds = f[where]
        if ds.dtype != np.dtype(dtype) or ds.shape != shape:
            raise StoreError(f"{path}: /{where} is {ds.dtype} {ds.shape}, expected {dtype} {shape}; "
                             f"the store is damaged: re-extract it")
    return splits


def _classifier_kind(f: h5py.File, path: Path) -> str:
    head = f.get("classifier")
    kind = decode("kind", head.attrs.get("kind")) if isinstance(head, h5py.Group) else None
    if kind not in ("linear", "cosine"):
        raise StoreError(f"{path}: /classifier has kind {kind!r}, not linear or cosine; the store is "
                         f"damaged: re-extract it")
    return kind


def _check_labels(f: h5py.File, path: Path, attrs: dict[str, Any], splits: list[str]) -> None:
    """Labels inside 0..K-1 (a label outside would index past every per-class table), and
    train_counts equal to the counts of /train/labels (every consumer trusts them)."""
    k = attrs["num_classes"]
    for split in splits:
        labels = f[split]["labels"][()]  # (N,) int64: small beside the maps
        bad = labels[(labels < 0) | (labels >= k)]
        if bad.size:
            raise StoreError(f"{path}: /{split}/labels holds {int(bad[0])}, outside the classes "
                             f"0..{k - 1}; the store is damaged: re-extract it")
        if split == "train" and "shard" not in attrs:  # a shard holds a slice of the labels
            counts = np.bincount(labels, minlength=k)  # (K,)
            differ = np.flatnonzero(counts != np.asarray(attrs["train_counts"], dtype=np.int64))
            if differ.size:
                c = int(differ[0])
                raise StoreError(f"{path}: the train_counts attribute disagrees with /train/labels "
                                 f"(class {c}: {attrs['train_counts'][c]} in the attribute, "
                                 f"{int(counts[c])} labels); the store is damaged: re-extract it")
