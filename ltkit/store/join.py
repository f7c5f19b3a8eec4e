"""Joining the shard stores of a multi-process extraction into one store (concatenated in rank order)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ltkit.store.reader import open_store
from ltkit.store.schema import VIEWS, StoreLayout
from ltkit.store.writer import StoreWriter, create_store

COMPUTED = ("pooled", "logits", "features", "cams")  # what the backbone gives, per row


def join_shards(shards: list[Path], partial: Path) -> None:
    """Write `partial`, a complete store whose datasets are the shards' concatenated in order
    (so they equal a single-process run's); the shards are left as they are."""
    stores = [open_store(p) for p in shards]
    try:
        first = stores[0]
        attrs = {k: v for k, v in first.attrs.items()
                 if k not in ("schema", "schema_version", "complete", "shard")}
        c, h, w = attrs["feature_shape"]
        splits = [s for s in first.splits] + ([VIEWS] if first.views else [])
        rows = {s: sum(st.rows(s) for st in stores) for s in splits}
        columns = {s: {name: np.concatenate([st.read(s, name) for st in stores])
                       for name in first.names(s) if name not in COMPUTED} for s in splits}
        layout = StoreLayout(c, h, w, attrs["num_classes"], rows, tuple(attrs["spatial_splits"]))
        partial.unlink(missing_ok=True)
        create_store(partial, layout, attrs=attrs, classifier=first.classifier(), columns=columns)
        with StoreWriter(partial) as writer:
            for split in splits:
                offset = 0
                for st in stores:
                    for name in (n for n in st.names(split) if n in COMPUTED):
                        for start, block in st.iter_chunks(split, name):
                            writer.write(split, offset + start, **{name: block})
                    offset += st.rows(split)
            writer.mark_complete()
    finally:
        for st in stores:
            st.close()
    open_store(partial).close()  # the joined store validates (its train_counts against its labels)
