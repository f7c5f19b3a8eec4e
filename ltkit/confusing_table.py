"""The confusing-class table: one typed record, `ConfusingTable`, and its artifact and CSV.

The artifact (``format="ltkit-confusing-table"``) is the table's fields as a plain dict,
validated on load (`ConfusingTable.from_dict`): a table that is not the split of its own
counts (`split_head_tail`, the head/tail rule it is held to), or that names a tail class among
its own confusing classes, is refused there and never reaches a stage. `ltkit.confusing`
builds tables; this module only reads, checks and writes them.
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

from ltkit.artifacts import atomic_output, load_torch_artifact, save_torch_artifact
from ltkit.errors import ArtifactError, ConfigError
from ltkit.lineage import lineage_problem

FORMAT = "ltkit-confusing-table"
FORMAT_VERSION = 1


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


def load_table(path: str | Path) -> ConfusingTable:
    """A validated table artifact."""
    return ConfusingTable.from_dict(load_torch_artifact(path, FORMAT), path)


def save_table(table: ConfusingTable, out: str | Path) -> Path:
    return save_torch_artifact(table.to_dict(), out)


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


def earlier_csv(path: Path) -> bool:
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
