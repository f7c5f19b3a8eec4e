"""`ltkit sweep`'s folder and its comparison: mean ± std over seeds, the method best on the selection data.

The folder holds the marker ``.ltkit-sweep`` (written first), ``table.pt`` (the confusing-class
table a store input gets), ``runs/`` (every run's classifier and its val / test evaluation
JSON) and the comparison as ``sweep.md``, ``sweep.csv`` and ``sweep.json``. ``--force``
replaces only a folder that is provably an earlier sweep: the marker, and nothing but those
names. The comparison has the columns of `ltkit compare` (`ltkit.compare.COLUMNS`, on test),
each the mean ± std over the method's runs, plus the balanced accuracy on the selection data
(the validation split's ``select`` half, or the store's bound split: `ltkit.sweep`), which
alone chooses the method. After the choice, and only for the report, the chosen method's rank
on test among all the candidates says whether the selection picked well.
"""

from __future__ import annotations

import csv
import io
import shutil
import stat
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ltkit.artifacts import check_name
from ltkit.compare import COLUMNS, column_values
from ltkit.errors import ArtifactError
from ltkit.runlog import SUFFIX as LOG_SUFFIX

MARKER = ".ltkit-sweep"
TOP_FILES = frozenset({MARKER, "table.pt", "sweep.md", "sweep.csv", "sweep.json"})
RUNS = "runs"
# a run's classifier, evaluations, run log (`ltkit.runlog`), unfinished writes
RUN_SUFFIXES = (".pt", ".json", LOG_SUFFIX, ".tmp", ".partial")
SELECT = "select_balanced"  # the column that chooses: balanced accuracy on the selection data
RANKED = "balanced"  # the test column the chosen method's test rank is read from (after the choice)


@dataclass
class MethodRow:
    method: str                       # the run name (fsa, class-balanced-crt, ncm, phase1, ...)
    options: dict[str, Any]           # the options asked for (flat names), {} for phase1
    classifiers: list[str] = field(default_factory=list)  # one path per seed, in seed order
    select: list[dict[str, Any]] = field(default_factory=list)  # evaluation JSONs on the selection data, per seed
    test: list[dict[str, Any]] = field(default_factory=list)  # evaluation JSONs on test, per seed
    seconds: float = 0.0              # time spent making and evaluating its runs (this call)
    eligible: bool = True             # may be chosen (not phase1, the store's own, nor a run trained on the
    #                                   selection data)

    def values(self) -> dict[str, list[float]]:
        """Column -> the values of every run (columns absent for this data left out)."""
        out: dict[str, list[float]] = {SELECT: [r["balanced_accuracy"] for r in self.select]}
        for c in COLUMNS:
            present = [column_values(r)[c] for r in self.test]
            if present and all(v is not None for v in present):
                out[c] = present
        return out

    def summary(self) -> dict[str, dict[str, float]]:
        """Column -> {mean, std} (std 0 for a single run)."""
        return {c: {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0}
                for c, v in self.values().items()}


def choose(rows: Sequence[MethodRow]) -> MethodRow:
    """The eligible row of the highest mean balanced accuracy on the selection data; ties: the
    earlier row (rows come simplest first). The test split is never read here."""
    eligible = [r for r in rows if r.eligible]
    return max(eligible, key=lambda r: statistics.fmean(x["balanced_accuracy"] for x in r.select))  # max: the first


def rank_on_test(rows: Sequence[MethodRow], chosen: MethodRow) -> tuple[int, int]:
    """(the chosen row's rank by mean test balanced accuracy among the eligible rows, 1 = best,
    ties counted in its favour; how many were ranked). For the report only: made after `choose`."""
    eligible = [r for r in rows if r.eligible]
    mine = chosen.summary()[RANKED]["mean"]
    return 1 + sum(r.summary()[RANKED]["mean"] > mine for r in eligible), len(eligible)


# ---- rendering ---------------------------------------------------------------------------
def heads(label: str) -> dict[str, str]:
    """Column -> its heading; ``label`` names the selection data (val-select, bound)."""
    return {SELECT: f"{label} balanced % (selects)", **{c: f"test {c} %" for c in COLUMNS}}


def verdict(rows: Sequence[MethodRow], chosen: MethodRow, label: str) -> str:
    """The line after the table: what was chosen, on what, and its rank on test."""
    rank, of = rank_on_test(rows, chosen)
    best = max((r for r in rows if r.eligible), key=lambda r: r.summary()[RANKED]["mean"])
    return (f"Chosen on {label}: **{chosen.method}**; its test rank (balanced accuracy) among the {of} "
            f"methods: **{rank} of {of}** (best on test: {best.method}, "
            f"{100 * best.summary()[RANKED]['mean']:.2f} %).")


def _best(rows: Sequence[MethodRow]) -> dict[str, float]:
    best: dict[str, float] = {}
    for r in rows:
        for c, s in r.summary().items():
            best[c] = max(best.get(c, float("-inf")), s["mean"])
    return best


def markdown(rows: Sequence[MethodRow], chosen: MethodRow, label: str) -> str:
    """One row per method; cells mean ± std in %, the best mean per column bold, the chosen
    marked; then the verdict line (the chosen method's test rank)."""
    best, names = _best(rows), heads(label)
    lines = ["| method | runs | " + " | ".join(names.values()) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in names) + " |"]
    for r in rows:
        s = r.summary()
        cells = []
        for c in names:
            text = "—" if c not in s else f"{100 * s[c]['mean']:.2f} ± {100 * s[c]['std']:.2f}"
            cells.append(f"**{text}**" if c in s and s[c]["mean"] == best[c] and len(rows) > 1 else text)
        name = f"{r.method} (chosen)" if r is chosen else r.method
        lines.append(f"| {name} | {len(r.select)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + verdict(rows, chosen, label)


def _test_ranks(rows: Sequence[MethodRow]) -> dict[str, int]:
    """Method -> its rank by mean test balanced accuracy among the eligible rows (report only)."""
    return {r.method: rank_on_test(rows, r)[0] for r in rows if r.eligible}


def csv_text(rows: Sequence[MethodRow], chosen: MethodRow) -> str:
    """One line per method: the selection score and the test columns (mean, std), its test rank."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names, ranks = heads(""), _test_ranks(rows)
    writer.writerow(["method", "runs", "chosen", *(f"{c}_{k}_pct" for c in names for k in ("mean", "std")),
                     "test_rank", "seconds"])
    for r in rows:
        s = r.summary()
        cells = [f"{100 * s[c][k]:.4f}" if c in s else "" for c in names for k in ("mean", "std")]
        writer.writerow([r.method, len(r.select), "yes" if r is chosen else "", *cells, ranks.get(r.method, ""),
                         f"{r.seconds:.2f}"])
    return buffer.getvalue().rstrip("\n")


def as_json(rows: Sequence[MethodRow], chosen: MethodRow, meta: dict[str, Any]) -> dict[str, Any]:
    rank, of = rank_on_test(rows, chosen)
    ranks = _test_ranks(rows)
    return meta | {
        "chosen": {"method": chosen.method, "classifier": chosen.classifiers[0],
                   "select_balanced_mean": chosen.summary()[SELECT]["mean"],
                   "test_rank": rank, "ranked": of,
                   "rule": "highest mean balanced accuracy on the selection data over the seeds; "
                           "ties: the simpler (earlier) method; its first seed's classifier. test_rank: its "
                           "rank by mean test balanced accuracy among the candidates (reported, never used)"},
        "methods": [{"method": r.method, "options": r.options, "runs": len(r.select), "chosen": r is chosen,
                     "test_rank": ranks.get(r.method),
                     "eligible": r.eligible, "classifiers": r.classifiers, "seconds": r.seconds,
                     "summary": r.summary()} for r in rows]}


# ---- the folder --------------------------------------------------------------------------
def is_sweep(folder: Path) -> bool:
    """True when ``folder`` is provably an ltkit sweep folder: a real folder with the marker,
    holding only the sweep's own names (``runs/`` only run files), no links."""
    try:
        if folder.is_symlink() or not folder.is_dir() or not (folder / MARKER).is_file():
            return False
        for entry in folder.iterdir():
            mode = entry.lstat().st_mode
            if entry.name == RUNS and stat.S_ISDIR(mode):
                if not all(f.name.endswith(RUN_SUFFIXES) and stat.S_ISREG(f.lstat().st_mode)
                           for f in entry.iterdir()):
                    return False
            elif entry.name not in TOP_FILES or not stat.S_ISREG(mode):
                return False
        return True
    except OSError:
        return False


def prepare_folder(out: str | Path, force: bool, inputs: Sequence[Path]) -> Path:
    """The sweep folder, made (with its marker) or reused: an earlier sweep is resumed (its
    finished runs reused), or with ``force`` replaced; any other existing folder or file is
    refused, and so is a folder that holds an input or the current folder."""
    final = Path(out).expanduser()
    check_name(final)
    where, here = final.resolve(), Path.cwd().resolve()
    if where == here or where in here.parents:
        raise ArtifactError(f"--out {out} is the current folder or one above it; give a new folder for the sweep")
    for source in inputs:
        if where == source.resolve() or where in source.resolve().parents:
            raise ArtifactError(f"--out {out} holds this sweep's input {source}; give a new folder for the sweep")
    if final.exists() or final.is_symlink():
        empty = final.is_dir() and not final.is_symlink() and not any(final.iterdir())
        if not empty and not is_sweep(final):
            raise ArtifactError(f"{final} exists and is not an earlier ltkit sweep (its marker {MARKER} is "
                                "missing, or it holds other files); choose another --out")
        if force and not empty:
            shutil.rmtree(final)
    (final / RUNS).mkdir(parents=True, exist_ok=True)
    (final / MARKER).write_text("ltkit sweep folder: every file here was written by ltkit sweep\n")
    return final
