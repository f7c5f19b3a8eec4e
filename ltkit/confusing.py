"""Head/tail split and confusing classes (Chu et al. 2020, Sec. 4.2 and 5.4): building their table.

Head/tail: classes sorted by training count (descending, ties by class index); the head is
the smallest prefix holding at least ``head_ratio`` of the training images; the rest are
tail. Confusing classes: for each tail class, the Phase-I softmax (of the stored
``/train/logits``) averaged over its training images; the ``top`` highest OTHER classes
(classes without training images excluded; ties by class index), most confusing first.

The table itself (`ConfusingTable`, its artifact, validation on load and CSV export) lives
in `ltkit.confusing_table`; this module builds it from a store and finds a store's table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ltkit import console
from ltkit.artifacts import (
    check_output,
    distinct_outputs,
    earlier_artifact,
    make_lineage,
    option_diff,
    other_options,
    resolve_input,
    reuse_existing,
    versions,
)
from ltkit.confusing_table import (
    FORMAT,
    ConfusingTable,
    csv_text,
    earlier_csv,
    export_csv,
    load_table,
    save_table,
    split_head_tail,
)
from ltkit.errors import ArtifactError, ConfigError, DataError, StoreError
from ltkit.lineage import parent, parent_change, verified_parent


@dataclass
class ConfusingConfig:
    head_ratio: float = 0.9  # h_r in (0, 1): the head holds at least this fraction of training images
    top: int = 3             # Nf: confusing classes kept per tail class (>= 1)

    def validate(self, num_classes: int | None = None) -> None:
        if num_classes is not None and num_classes < 2:
            raise ConfigError(f"the store holds {num_classes} class; a store of one class has no tail "
                              "and no other class to confuse it with: confusing classes need at least two")
        if not 0.0 < self.head_ratio < 1.0:
            raise ConfigError(f"--head-ratio must lie strictly between 0 and 1, got {self.head_ratio}")
        if self.top < 1:
            raise ConfigError(f"--top must be at least 1, got {self.top}")
        if num_classes is not None and self.top > num_classes - 1:
            raise ConfigError(f"--top {self.top} asks for more confusing classes than the "
                              f"{num_classes - 1} other classes; use at most {num_classes - 1}")


def mean_softmax(store, classes: np.ndarray) -> np.ndarray:
    """(T, K) Phase-I softmax averaged over the training images of each of ``classes`` (T,)."""
    K = len(store.class_names)
    row_of = np.full(K, -1, dtype=np.int64)
    row_of[classes] = np.arange(len(classes))
    labels = store.read("train", "labels").astype(np.int64)  # (N,)
    sums = torch.zeros(len(classes), K, dtype=torch.float64)  # (T, K)
    for first, logits in store.iter_chunks("train", "logits"):  # bounded memory
        rows = torch.from_numpy(row_of[labels[first:first + len(logits)]])  # (b,)
        keep = rows >= 0
        probs = torch.softmax(torch.from_numpy(logits).double(), dim=1)  # (b, K)
        sums.index_add_(0, rows[keep], probs[keep])
    count = np.bincount(labels, minlength=K)[classes]  # (T,)
    return (sums / torch.from_numpy(count).clamp_min(1)[:, None]).numpy()  # (T, K)


def rank_confusing(mean_scores: np.ndarray, classes: np.ndarray, counts: np.ndarray,
                   top: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``top`` other classes of each row of ``mean_scores`` (T, K): (classes, scores) (T, top)."""
    scores = torch.from_numpy(np.array(mean_scores, dtype=np.float64))  # (T, K)
    scores[torch.arange(len(classes)), torch.from_numpy(np.asarray(classes))] = -np.inf  # not itself
    scores[:, torch.from_numpy(np.asarray(counts) == 0)] = -np.inf  # nothing to draw from
    available = int(torch.isfinite(scores).sum(1).min()) if len(classes) else top
    if top > available:
        raise ConfigError(f"--top {top}: only {available} other classes have training images; "
                          "use a smaller --top")
    ranked = torch.sort(scores, dim=1, descending=True, stable=True)  # ties: lower index first
    return ranked.indices[:, :top].numpy(), ranked.values[:, :top].float().numpy()


def make_table(store, cfg: ConfusingConfig) -> ConfusingTable:
    """The table of an open store (no lineage): head/tail split and confusing classes."""
    K = len(store.class_names)
    cfg.validate(K)
    counts = np.bincount(store.read("train", "labels").astype(np.int64), minlength=K)  # (K,)
    if not np.array_equal(counts, store.train_counts):
        raise StoreError(f"{store.path}: train_counts disagree with /train/labels; the store is "
                         "damaged: re-extract it")
    head, tail = split_head_tail(counts, cfg.head_ratio)
    empty = tail[counts[tail] == 0]
    if empty.size:
        raise DataError(f"tail class {store.class_names[empty[0]]!r} has no training image, so it "
                        "has no confusing classes; drop it from the data set")
    confusing, scores = rank_confusing(mean_softmax(store, tail), tail, counts, cfg.top)
    return ConfusingTable(head_classes=torch.from_numpy(head), tail_classes=torch.from_numpy(tail),
                          confusing=torch.from_numpy(confusing), scores=torch.from_numpy(scores),
                          head_ratio=cfg.head_ratio, top=cfg.top,
                          head_fraction=float(counts[head].sum() / counts.sum()),
                          class_names=list(store.class_names), train_counts=torch.from_numpy(counts))


def default_table_path(store_path: str | Path) -> Path:
    store_path = Path(store_path)
    return store_path.with_name(store_path.stem + ".table.pt")


def new_table(store_path: Path, cfg: ConfusingConfig) -> ConfusingTable:
    """The table of a store, with its lineage (not written)."""
    from ltkit.store import open_store

    with open_store(store_path) as st:
        table = make_table(st, cfg)
    table.lineage = make_lineage({"store": store_path}, dataclasses.asdict(cfg), None)
    table.versions = versions()
    return table


def build_table(store: str | Path, cfg: ConfusingConfig, *, out: str | Path | None = None,
                force: bool = False, csv_path: str | Path | None = None) -> Path:
    """``ltkit confusing-classes``: write the table of a store (``-``: path from stdin)."""
    cfg.validate()
    store_path = resolve_input(store)
    out = Path(out or default_table_path(store_path)).expanduser()
    distinct_outputs(out=out, csv=csv_path)
    if reuse_existing(out, force, lambda p: _table_differs(load_table(p), p, store_path, cfg)):
        console.log(f"{out} exists with the same options: reusing it (--force to rebuild)")
        table = load_table(out)
        if csv_path is not None:  # the export of this very table; another file is never replaced
            csv_path = Path(csv_path).expanduser()
            if not (csv_path.is_file() and csv_path.read_bytes() == csv_text(table).encode()):
                export_csv(table, check_output(csv_path, force, inputs=[store_path, out],
                                               replaces=earlier_csv, kind="table CSV export"))
        return out
    out = check_output(out, force, inputs=[store_path], replaces=earlier_artifact(FORMAT),
                       kind="confusing-class table")
    if csv_path is not None:
        csv_path = check_output(csv_path, force, inputs=[store_path], replaces=earlier_csv,
                                kind="table CSV export")
    table = new_table(store_path, cfg)
    save_table(table, out)
    if csv_path is not None:
        export_csv(table, csv_path)
    return out


def _table_differs(table: ConfusingTable, path: Path, store_path: Path, cfg: ConfusingConfig) -> str | None:
    """How ``table`` differs from one built from this very store (path and content) with
    these options; None when it does not."""
    change = parent_change(parent(table.lineage, "store", owner=path), store_path, same_path=True)
    return change or other_options(option_diff(table.lineage["options"], dataclasses.asdict(cfg)))


def table_for_store(store_path: str | Path, *, write: bool = True) -> tuple[ConfusingTable, Path, bool]:
    """The table beside a store (``default_table_path``): reused when it was built from this
    very store, else built with the default options; returns (table, its path, whether it is
    still to be written). ``write``: write a new one at once (else the caller does, with
    `save_table`, once nothing else can be refused)."""
    store_path = Path(store_path)
    path = default_table_path(store_path)
    if path.exists():
        table = load_table(path)
        if parent_change(parent(table.lineage, "store", owner=path), store_path, same_path=True):
            raise ArtifactError(f"{path} is the table of another store (or of an older version "
                                "of this one); give a table path, or remove that file")
        console.log(f"using the existing table {path} (head ratio {table.head_ratio}, top {table.top})")
        return table, path, False
    cfg = ConfusingConfig()
    console.log(f"no confusing-class table given: building one with the defaults "
                f"(head ratio {cfg.head_ratio}, top {cfg.top}) at {path}")
    table = new_table(store_path, cfg)
    if write:
        save_table(table, path)
    return table, path, not write


def table_store_path(table: ConfusingTable, *, verify: bool = True) -> Path:
    """The store a table was built from; ArtifactError when it is gone or has changed."""
    if not verify:
        return parent(table.lineage, "store", owner="the table").path
    return verified_parent(table.lineage, "store", owner="the table", option="--store")
