"""The log of a training run: one CSV row per epoch (train-backbone) or per logged stretch of
iterations (augment-finetune), beside the stage's output, and TensorBoard scalars when asked.

``OUT.pt`` logs to ``OUT.metrics.csv`` (timm's ``summary.csv`` habit): a header line, then one
row per epoch, written through the `csv` module and flushed at once, so a crash keeps every
row logged before it. Columns: the step (``epoch`` or ``iteration``), then `COLUMNS`, then the
stage's own extras; a value not measured at that step (validation between evaluations) is an
empty cell. The log belongs to its output: a stage allowed to write ``OUT`` replaces an
earlier ltkit log at ``OUT.metrics.csv``, never another file (nor one of its inputs). A resumed
run starts the file again from the rows its resume state holds, then appends, so the log
continues without repeating an epoch that ran past the last saved state.

TensorBoard (``--tensorboard DIR``, the optional extra ``ltkit[tensorboard]``): the same
values as scalars through `torch.utils.tensorboard.SummaryWriter`, ``train/...`` and
``val/...`` at the same step; a resumed run purges the steps it runs again.
"""

from __future__ import annotations

import csv
import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ltkit.artifacts import atomic_output, check_not_input
from ltkit.errors import ArtifactError, ConfigError

SUFFIX = ".metrics.csv"
GROUPS = ("many", "medium", "few")
COLUMNS = ("loss", "lr", "train_acc", "val_balanced_acc", "val_many_acc", "val_medium_acc", "val_few_acc",
           "seconds")
STEPS = ("epoch", "iteration")  # the first column: what one row is
EXTRA = "ltkit[tensorboard]"


def log_path(out: str | os.PathLike) -> Path:
    """Where the log of the output ``out`` goes: ``backbone.pt`` -> ``backbone.metrics.csv``."""
    out = Path(out).expanduser()
    return out.with_name(out.stem + SUFFIX)


def is_run_log(path: str | os.PathLike) -> bool:
    """True when ``path`` is a run log ltkit wrote (its header names a step and every column)."""
    try:
        with open(path, newline="") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return bool(header) and header[0] in STEPS and tuple(header[1:len(COLUMNS) + 1]) == COLUMNS


def check_log(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """The log path of ``out``, checked before any work: never an input, a folder or a file
    that is not an earlier ltkit run log."""
    path = log_path(out)
    check_not_input(path, inputs)
    if path.is_dir() or ((path.exists() or path.is_symlink()) and not is_run_log(path)):
        raise ArtifactError(f"{path} (the run log of {Path(out).name}) exists and is not a run log ltkit wrote; "
                            "move it away or choose another --out")
    return path


def read_log(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a run log as written (strings; empty cells '')."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def val_columns(metrics: dict[str, Any] | None) -> dict[str, float | None]:
    """An evaluation's balanced and many / medium / few accuracy as log columns (None: empty group)."""
    if not metrics:
        return {}
    return {"val_balanced_acc": metrics["balanced_acc"],
            **{f"val_{g}_acc": metrics["groups"][g]["accuracy"] for g in GROUPS}}


def check_tensorboard(folder: str | os.PathLike) -> None:
    """Refuse ``--tensorboard FOLDER`` before any work when it cannot be written: a file there,
    or no tensorboard package (one line naming the extra)."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--tensorboard {folder} is a file; give a folder for the event files")
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(f"--tensorboard needs the tensorboard package: pip install '{EXTRA}' "
                          "(or leave --tensorboard out; the CSV log is written either way)")


def summary_writer(folder: str | os.PathLike, purge_step: int | None = None):
    """A `SummaryWriter` on ``folder`` (`check_tensorboard` first)."""
    check_tensorboard(folder)
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # installed, but torch cannot use it (a broken install)
        raise ConfigError(f"--tensorboard: torch cannot load tensorboard ({exc}); reinstall '{EXTRA}'") from None
    return SummaryWriter(log_dir=str(Path(folder).expanduser()), purge_step=purge_step)


class RunLog:
    """Rows -> ``path`` (CSV, flushed per row) and, with ``tensorboard``, event files there.

    ``rows``: rows already logged by the run this one continues (a resume); with the first
    new row the file is started again from them (atomically), so nothing is repeated or lost,
    and a run refused before its first row leaves the file as it was."""

    def __init__(self, path: str | os.PathLike, step: str, *, extra: Iterable[str] = (),
                 rows: Iterable[dict[str, Any]] = (), tensorboard: str | os.PathLike | None = None):
        if step not in STEPS:
            raise ValueError(f"step must be one of {STEPS}, got {step!r}")
        self.path, self.step = Path(path), step
        self.columns = (step, *COLUMNS, *extra)
        self._rows = list(rows)  # written with the first new row: a run refused before it writes nothing
        self._fh = self._csv = self._tb = None
        if tensorboard is not None:
            self._tb = summary_writer(tensorboard, purge_step=(self._rows[-1][step] + 1) if self._rows else None)

    def _start(self) -> None:
        """The file, started again from the rows of before (atomically), open to append."""
        with atomic_output(self.path, suffix=".tmp") as tmp, open(tmp, "w", newline="") as fh:
            writer = self._writer(fh)
            writer.writeheader()
            writer.writerows(_cells(row) for row in self._rows)
        self._fh = open(self.path, "a", newline="")
        self._csv = self._writer(self._fh)

    def _writer(self, fh) -> csv.DictWriter:
        return csv.DictWriter(fh, self.columns, restval="", extrasaction="ignore")

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (missing or None values: empty cells) and flush it to disk."""
        if self._csv is None:
            self._start()
        self._csv.writerow(_cells(row))
        self._fh.flush()
        if self._tb is not None:
            for name in self.columns[1:]:
                value = row.get(name)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(_tag(name), value, row[self.step])
            self._tb.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cells(row: dict[str, Any]) -> dict[str, Any]:
    return {k: "" if v is None else v for k, v in row.items()}


def _tag(column: str) -> str:
    """TensorBoard's tag of a column: val_few_acc -> val/few_acc, loss -> train/loss."""
    if column.startswith("val_"):
        return "val/" + column.removeprefix("val_")
    return "time/seconds" if column == "seconds" else "train/" + column
