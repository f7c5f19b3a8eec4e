"""Head/tail split and confusing classes (Chu et al. 2020, Sec. 4.2 and 5.4), and their table.

Head/tail: classes sorted by training count (descending, ties by class index); the head is
the smallest prefix holding at least ``head_ratio`` of the training images; the rest are
tail. Confusing classes: for each tail class, the Phase-I softmax (of the stored
``/train/logits``) averaged over its training images; the ``top`` highest OTHER classes
(classes without training images excluded; ties by class index), most confusing first.

The table is one typed record, `ConfusingTable`; its artifact
(``format="ltkit-confusing-table"``) is the same fields as a plain dict, validated on load
(`ConfusingTable.from_dict`): a table that is not the split of its own counts, or that names a
tail class among its own confusing classes, is refused there and never reaches a stage.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ltkit import console
from ltkit.artifacts import (
    atomic_output,
    check_output,
    distinct_outputs,
    earlier_artifact,
    load_torch_artifact,
    make_lineage,
    option_diff,
    other_options,
    resolve_input,
    reuse_existing,
    save_torch_artifact,
    versions,
)
from ltkit.errors import ArtifactError, ConfigError, DataError, StoreError
from ltkit.lineage import lineage_problem, parent, parent_change, verified_parent

FORMAT = "ltkit-confusing-table"
FORMAT_VERSION = 1


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


def split_head_tail(counts: np.ndarray, head_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """(K,) training counts -> (head (H,), tail (T,)) class indices, each by descending count."""
    counts = np.asarray(counts, dtype=np.int64)
    order = np.lexsort((np.arange(len(counts)), -counts))  # count descending, then index
    held = np.cumsum(counts[order]) / max(int(counts.sum()), 1)  # (K,) fraction held by prefix
    h = int(np.argmax(held >= head_ratio)) + 1
    if h >= len(counts):
        raise ConfigError(f"--head-ratio {head_ratio} puts every class in the head (the largest "
                          f"{len(counts) - 1} classes hold {held[-2]:.4f} of the images); use a "
                          f"smaller ratio so that some classes are tail")
    return order[:h], order[h:]


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


def save_table(table: ConfusingTable, out: str | Path) -> Path:
    return save_torch_artifact(table.to_dict(), out)


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
                                               replaces=_earlier_csv, kind="table CSV export"))
        return out
    out = check_output(out, force, inputs=[store_path], replaces=earlier_artifact(FORMAT),
                       kind="confusing-class table")
    if csv_path is not None:
        csv_path = check_output(csv_path, force, inputs=[store_path], replaces=_earlier_csv,
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


def load_table(path: str | Path) -> ConfusingTable:
    """A validated table artifact."""
    return ConfusingTable.from_dict(load_torch_artifact(path, FORMAT), path)


def table_store_path(table: ConfusingTable, *, verify: bool = True) -> Path:
    """The store a table was built from; ArtifactError when it is gone or has changed."""
    if not verify:
        return parent(table.lineage, "store", owner="the table").path
    return verified_parent(table.lineage, "store", owner="the table", option="--store")


CSV_FIELDS = ("tail_class", "tail_name", "tail_count", "rank", "confusing_class", "confusing_name", "score")


@dataclass
class ConfusingTable:
    """The head/tail split of a store and the confusing classes of each tail class."""

    head_classes: torch.Tensor  # (H,) int64, by descending training count (ties: index)
    tail_classes: torch.Tensor  # (T,) int64, the rest, in the same order
    confusing: torch.Tensor     # (T, Nf) int64: row i, the Nf classes most confused with tail class i
    scores: torch.Tensor        # (T, Nf) float32 in [0, 1]: their mean Phase-I softmax, descending
    head_ratio: float           # h_r the split was made with, in (0, 1)
    top: int                    # Nf
    head_fraction: float        # the fraction of training images the head holds (>= head_ratio)
    class_names: list[str]      # (K,)
    train_counts: torch.Tensor  # (K,) int64 training images per class
    lineage: dict[str, Any] = field(default_factory=dict)   # parents: store; options: its ConfusingConfig
    versions: dict[str, str] = field(default_factory=dict)
    format: ClassVar[str] = FORMAT
    format_version: ClassVar[int] = FORMAT_VERSION

    def __getitem__(self, key: str) -> Any:
        """``table["top"]``: the mapping-style reads of before (benchmarks, notebooks) keep working."""
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        """The artifact: plain tensors and values (``torch.load(..., weights_only=True)`` reads it)."""
        return {"format": FORMAT, "format_version": FORMAT_VERSION} | dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, obj: dict[str, Any], path: str | Path) -> ConfusingTable:
        """The table of an artifact dict; ArtifactError (one line, naming ``path``) when it is of
        another version or damaged."""
        if obj.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(f"{path} is a table of format version {obj.get('format_version')!r}; "
                                f"this ltkit reads version {FORMAT_VERSION}: rebuild it")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in obj]
        problem = f"no {missing[0]}" if missing else None
        if problem is None:
            table = cls(**{n: obj[n] for n in names})
            try:
                problem = table.problem()
            except (AttributeError, TypeError, ValueError, RuntimeError, IndexError, OverflowError) as exc:
                problem = f"unreadable fields ({type(exc).__name__})"
        if problem:
            raise ArtifactError(f"{path} is a damaged confusing-class table ({problem}); rebuild it with "
                                "ltkit confusing-classes")
        return table

    def problem(self) -> str | None:
        """What makes this table inconsistent, or None: types and shapes, the split (it must be
        the head/tail split of its own counts at its head ratio), the confusing classes (other
        classes with training images, distinct per row), finite scores, its lineage."""
        def index_tensor(t: Any, dims: int) -> bool:
            return isinstance(t, torch.Tensor) and t.dim() == dims and not t.is_floating_point() \
                and not t.is_complex() and t.dtype != torch.bool

        names, counts = self.class_names, self.train_counts
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names) and len(names) >= 2):
            return "its class names are not a list of names"
        K = len(names)
        if not (index_tensor(counts, 1) and counts.shape == (K,) and bool((counts >= 0).all())):
            return "its training counts are not one count >= 0 per class"
        if not (isinstance(self.top, int) and not isinstance(self.top, bool) and self.top >= 1):
            return "its top is not a whole number >= 1"
        if not (isinstance(self.head_ratio, float) and 0.0 < self.head_ratio < 1.0):
            return "its head ratio is not a number in (0, 1)"
        if not (index_tensor(self.head_classes, 1) and index_tensor(self.tail_classes, 1)):
            return "its head and tail classes are not lists of class indices"
        try:
            head, tail = split_head_tail(counts.numpy(), self.head_ratio)
        except ConfigError:
            return "its head ratio leaves no tail"
        if self.head_classes.tolist() != head.tolist() or self.tail_classes.tolist() != tail.tolist():
            return "its head and tail are not the split of its training counts (swapped, overlapping or missing)"
        T = len(tail)
        if not (index_tensor(self.confusing, 2) and self.confusing.shape == (T, self.top)):
            return f"its confusing classes are not a ({T}, {self.top}) table of class indices"
        conf = self.confusing
        if not bool(((conf >= 0) & (conf < K)).all()):
            return "a confusing class index lies outside the classes"
        if bool((conf == self.tail_classes[:, None]).any()):
            return "a tail class is listed as its own confusing class"
        if any(len(set(row)) != len(row) for row in conf.tolist()):
            return "a tail class lists a confusing class twice"
        if not bool((counts[conf] > 0).all()):
            return "a confusing class has no training image"
        scores = self.scores
        if not (isinstance(scores, torch.Tensor) and scores.is_floating_point() and scores.shape == (T, self.top)):
            return f"its scores are not a ({T}, {self.top}) table of numbers"
        if not bool((torch.isfinite(scores) & (scores >= 0) & (scores <= 1)).all()):
            return "its scores are not all in [0, 1]"
        if not bool((scores[:, :-1] >= scores[:, 1:]).all()):
            return "its scores are not ranked, most confusing first"
        held = float(counts[self.head_classes].sum()) / max(float(counts.sum()), 1.0)
        if not (isinstance(self.head_fraction, float) and math.isclose(self.head_fraction, held, abs_tol=1e-6)):
            return "its head fraction is not what its head holds"
        problem = lineage_problem(self.lineage)
        if problem or "store" not in self.lineage.get("parents", {}) or \
                not isinstance(self.lineage.get("options", {}), dict):
            return problem or "its lineage names no store"
        if not (isinstance(self.versions, dict) and all(isinstance(v, str) for v in self.versions.values())):
            return "its versions are not a record of version strings"
        return None

    def check_store(self, st) -> None:
        """ArtifactError when the open store ``st`` is not one this table was built from: other
        classes, or other training counts."""
        if list(self.class_names) != list(st.class_names):
            raise ArtifactError(f"the table's classes differ from those of {st.path}; give the "
                                "store the table was built from")
        if self.train_counts.tolist() != st.train_counts.tolist():
            raise ArtifactError(f"the table was built from a store with other training counts than "
                                f"{st.path}; rebuild the table from this store with ltkit "
                                "confusing-classes")


def table_rows(table: ConfusingTable) -> list[dict[str, Any]]:
    """One row per (tail class, rank): the long form of the table (CSV, display)."""
    names, counts = table.class_names, table.train_counts
    rows = []
    for i, c in enumerate(table.tail_classes.tolist()):
        for rank, (u, s) in enumerate(zip(table.confusing[i].tolist(), table.scores[i].tolist())):
            values = (c, names[c], int(counts[c]), rank + 1, u, names[u], s)
            rows.append(dict(zip(CSV_FIELDS, values)))
    return rows


def csv_text(table: ConfusingTable) -> str:
    """The table as CSV text, one row per (tail class, confusing class)."""
    rows = table_rows(table)
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def _earlier_csv(path: Path) -> bool:
    """True when ``path`` is an earlier CSV export of a table (its header line is ours)."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return fh.readline().rstrip("\r\n") == ",".join(CSV_FIELDS)
    except (OSError, UnicodeDecodeError):
        return False


def export_csv(table: ConfusingTable, path: str | Path) -> Path:
    """The table as CSV, one row per (tail class, confusing class)."""
    with atomic_output(path) as partial:
        partial.write_bytes(csv_text(table).encode())  # UTF-8, the csv module's line ends
    return Path(path)
