"""What a store holds, where it came from, how big it is: a plain-JSON summary (`ltkit inspect`)."""

from __future__ import annotations

import math
from typing import Any

from ltkit.metrics import split_of
from ltkit.store.reader import Store
from ltkit.store.schema import VIEWS


def describe(st: Store) -> dict[str, Any]:
    """A plain-JSON summary of an open store (NaN and infinities inside its JSON attributes
    become None: JSON has no NaN)."""
    groups = split_of(st.train_counts)  # (K,) many | medium | few
    splits = {}
    for split in (*st.splits, *([VIEWS] if st.views else [])):
        splits[split] = {"rows": st.rows(split), "arrays": {
            name: {"shape": list(st.shape(split, name)), "dtype": str(st.dtype(split, name))}
            for name in st.names(split)}}
    head = st.classifier()
    a = st.attrs
    return _plain({
        "path": str(st.path), "schema_version": a["schema_version"], "size_bytes": st.path.stat().st_size,
        "splits": splits, "train_views": st.views, "spatial_splits": list(a["spatial_splits"]),
        "feature_shape": list(a["feature_shape"]),
        "classes": [{"name": n, "train_count": int(c), "group": str(g)}
                    for n, c, g in zip(st.class_names, st.train_counts, groups)],
        "groups": {g: int((groups == g).sum()) for g in ("many", "medium", "few")},
        "classifier": {"kind": head["kind"], "scale": head["scale"], "weight": list(head["weight"].shape),
                       "bias": head["bias"] is not None},
        "provenance": {"arch": a["arch"], "layer": a["layer"], "head": a["head"],
                       "backbone_path": a["backbone_path"], "backbone_sha256": a["backbone_sha256"],
                       "ltkit_version": a["ltkit_version"], "seed": a["seed"], "dataset": a["dataset"],
                       "options": a["options"], "created": a["lineage"].get("created")},
    })


def _plain(obj: Any) -> Any:
    """`obj` with every non-finite float replaced by None (nested dicts and lists too)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
