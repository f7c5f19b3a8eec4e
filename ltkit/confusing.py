"""Head/tail split and confusing classes (Chu et al. 2020, Sec. 4.2 and 5.4), and their table.

Head/tail: classes sorted by training count (descending, ties by class index); the head is
the smallest prefix holding at least ``head_ratio`` of the training images; the rest are
tail. Confusing classes: for each tail class, the Phase-I softmax (of the stored
``/train/logits``) averaged over its training images; the ``top`` highest OTHER classes
(classes without training images excluded; ties by class index), most confusing first.

The table artifact (``format="ltkit-confusing-table"``) holds ``head_classes`` (H,) and
``tail_classes`` (T,) int64 sorted by descending count, ``confusing`` (T, Nf) int64,
``scores`` (T, Nf) float32, ``head_ratio``, ``top``, ``head_fraction`` (the fraction of
training images the head actually holds), ``class_names``, ``train_counts`` (K,) int64,
``format_version``, ``versions`` and ``lineage`` (parents: ``store``; options: this config).
"""

from __future__ import annotations

import csv
import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ltkit import console
from ltkit.artifacts import (atomic_output, check_output, distinct_outputs, earlier_artifact, file_sha256,
                             load_torch_artifact, make_lineage, option_diff, other_options, resolve_input, reuse_existing,
                             save_torch_artifact, versions)
from ltkit.errors import ArtifactError, ConfigError, DataError, StoreError

FORMAT = "ltkit-confusing-table"
FORMAT_VERSION = 1


@dataclass
class ConfusingConfig:
    head_ratio: float = 0.9  # h_r in (0, 1): the head holds at least this fraction of training images
    top: int = 3             # Nf: confusing classes kept per tail class (>= 1)

    def validate(self, num_classes: int | None = None) -> None:
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


def make_table(store, cfg: ConfusingConfig) -> dict[str, Any]:
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
    return {"format": FORMAT, "format_version": FORMAT_VERSION,
            "head_classes": torch.from_numpy(head), "tail_classes": torch.from_numpy(tail),
            "confusing": torch.from_numpy(confusing), "scores": torch.from_numpy(scores),
            "head_ratio": cfg.head_ratio, "top": cfg.top,
            "head_fraction": float(counts[head].sum() / counts.sum()),
            "class_names": list(store.class_names), "train_counts": torch.from_numpy(counts)}


def default_table_path(store_path: str | Path) -> Path:
    store_path = Path(store_path)
    return store_path.with_name(store_path.stem + ".table.pt")


def write_table(store_path: Path, cfg: ConfusingConfig, out: Path) -> dict[str, Any]:
    """Build the table of a store, add its lineage, write it to ``out`` and show it."""
    from ltkit.store import open_store

    with open_store(store_path) as st:
        table = make_table(st, cfg)
    table["lineage"] = make_lineage({"store": store_path}, dataclasses.asdict(cfg), None)
    table["versions"] = versions()
    save_torch_artifact(table, out)
    show_table(table)
    return table


def build_table(store: str | Path, cfg: ConfusingConfig, *, out: str | Path | None = None,
                force: bool = False, csv_path: str | Path | None = None) -> Path:
    """``ltkit confusing-classes``: write the table of a store (``-``: path from stdin)."""
    cfg.validate()
    store_path = resolve_input(store)
    out = Path(out or default_table_path(store_path)).expanduser()
    distinct_outputs(out=out, csv=csv_path)
    if reuse_existing(out, force, lambda p: _table_differs(load_table(p), store_path, cfg)):
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
    table = write_table(store_path, cfg, out)
    if csv_path is not None:
        export_csv(table, csv_path)
    return out


def _table_differs(table: dict[str, Any], store_path: Path, cfg: ConfusingConfig) -> str | None:
    """How ``table`` differs from one built from this very store (path and content) with
    these options; None when it does not."""
    parent = table["lineage"]["parents"]["store"]
    if Path(parent["path"]).resolve() != store_path.resolve():
        return f"was built from another store ({parent['path']})"
    if parent["sha256"] != file_sha256(store_path):
        return f"was built from an earlier version of {store_path} (its hash differs)"
    return other_options(option_diff(table["lineage"]["options"], dataclasses.asdict(cfg)))


def table_for_store(store_path: str | Path) -> tuple[dict[str, Any], Path]:
    """The table beside a store (``default_table_path``): reused when it was built from this
    very store, else built with the default options and written there."""
    store_path = Path(store_path)
    path = default_table_path(store_path)
    if path.exists():
        table = load_table(path)
        parent = table["lineage"]["parents"]["store"]
        if Path(parent["path"]).resolve() != store_path.resolve() or \
                parent["sha256"] != file_sha256(store_path):
            raise ArtifactError(f"{path} is the table of another store (or of an older version "
                                "of this one); give a table path, or remove that file")
        console.log(f"using the existing table {path} (head ratio {table['head_ratio']}, "
                    f"top {table['top']})")
        return table, path
    cfg = ConfusingConfig()
    console.log(f"no confusing-class table given: building one with the defaults "
                f"(head ratio {cfg.head_ratio}, top {cfg.top}) at {path}")
    return write_table(store_path, cfg, path), path


def load_table(path: str | Path) -> dict[str, Any]:
    """A validated table artifact."""
    table = load_torch_artifact(path, FORMAT)
    if table.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path} is a table of format version {table.get('format_version')}; "
                            f"this ltkit reads version {FORMAT_VERSION}: rebuild it")
    try:
        T, nf = table["confusing"].shape
        K = len(table["class_names"])
        classes = torch.cat([table["head_classes"], table["tail_classes"]])  # (K,) every class once
        ok = (table["tail_classes"].shape == (T,) and table["scores"].shape == (T, nf)
              and nf == table["top"] and K == len(table["train_counts"])
              and sorted(classes.tolist()) == list(range(K))
              and bool(((table["confusing"] >= 0) & (table["confusing"] < K)).all())
              and bool(torch.isfinite(table["scores"]).all())
              and "store" in table["lineage"]["parents"])
    except (KeyError, AttributeError, TypeError, ValueError, RuntimeError):
        ok = False
    if not ok:
        raise ArtifactError(f"{path} is a damaged confusing-class table; rebuild it with "
                            "ltkit confusing-classes")
    return table


def table_store_path(table: dict[str, Any], *, verify: bool = True) -> Path:
    """The store a table was built from; ArtifactError when it is gone or has changed."""
    parent = table["lineage"]["parents"]["store"]
    path = Path(parent["path"])
    if not path.is_file():
        raise ArtifactError(f"the table's store {path} does not exist; pass the store with --store")
    if verify and file_sha256(path) != parent["sha256"]:
        raise ArtifactError(f"the table's store {path} changed since the table was built (hash "
                            "differs); rebuild the table, or pass the store with --store")
    return path


CSV_FIELDS = ("tail_class", "tail_name", "tail_count", "rank", "confusing_class", "confusing_name", "score")


def table_rows(table: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (tail class, rank): the long form of the table (CSV, display)."""
    names, counts = table["class_names"], table["train_counts"]
    rows = []
    for i, c in enumerate(table["tail_classes"].tolist()):
        for rank, (u, s) in enumerate(zip(table["confusing"][i].tolist(), table["scores"][i].tolist())):
            values = (c, names[c], int(counts[c]), rank + 1, u, names[u], s)
            rows.append(dict(zip(CSV_FIELDS, values)))
    return rows


def csv_text(table: dict[str, Any]) -> str:
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


def export_csv(table: dict[str, Any], path: str | Path) -> Path:
    """The table as CSV, one row per (tail class, confusing class)."""
    with atomic_output(path) as partial:
        partial.write_bytes(csv_text(table).encode())  # UTF-8, the csv module's line ends
    return Path(path)


def show_table(table: dict[str, Any]) -> None:
    """A rich table on stderr: each tail class with its confusing classes and scores."""
    if console.is_quiet():
        return
    from rich.markup import escape
    from rich.table import Table

    names = [escape(str(n)) for n in table["class_names"]]  # shown as text, never as markup
    counts = table["train_counts"]
    head = ", ".join(names[c] for c in table["head_classes"].tolist())
    view = Table(title=f"confusing classes (head ratio {table['head_ratio']}: "
                       f"{len(table['head_classes'])} head classes hold "
                       f"{table['head_fraction']:.1%} of the images)")
    view.add_column("tail class")
    view.add_column("train", justify="right")
    for rank in range(table["top"]):
        view.add_column(f"#{rank + 1} (score)")
    for i, c in enumerate(table["tail_classes"].tolist()):
        cells = [f"{names[u]} ({s:.3f})" for u, s in zip(table["confusing"][i].tolist(),
                                                        table["scores"][i].tolist())]
        view.add_row(names[c], str(int(counts[c])), *cells)
    console.console.print(view)
    console.console.print(f"head: {head}", soft_wrap=True)  # names escaped above: print as is
