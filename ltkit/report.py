"""What a human reads of an evaluation: the stderr summary and the ``--report DIR`` folder.

The folder holds ``metrics.json`` (the same object evaluate prints), ``per_class.csv``,
``confusion.csv``, ``summary.md``, three PNG plots and the marker file ``.ltkit-report``. It is
written as ``DIR.partial`` and renamed into place when complete; file names are fixed, never
built from class names. ``--force`` replaces only a folder that is provably an earlier report:
it holds the marker and nothing but these files. The current folder, a folder above it, and a
folder holding an input are never replaced.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from ltkit import choices, console
from ltkit.artifacts import check_name
from ltkit.errors import ArtifactError
from ltkit.evaluate import Evaluation
from ltkit.metrics import GROUPS
from ltkit.plots import plot_confusion, plot_per_class_accuracy, plot_reliability

SUMMARY_SPLITS = choices.SUMMARY_GROUPS
PLOTS = {"per_class_accuracy.png": "Per-class accuracy against training count",
         "confusion_matrix.png": "Confusion matrix",
         "reliability.png": "Reliability diagram"}
MARKER = ".ltkit-report"  # written first, so a crashed report's partial folder is recognisable too
REPORT_FILES = frozenset({MARKER, "metrics.json", "per_class.csv", "confusion.csv", "summary.md", *PLOTS})


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def split_rows(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, {accuracy, classes, samples}) of many / medium / few, then FSA head / tail."""
    rows = [(name, result["splits"][name]) for name in GROUPS]
    if result.get("fsa"):
        rows += [(f"FSA {role}", result["fsa"][role]) for role in ("head", "tail")]
    return rows


def summary_tables(result: dict[str, Any], split: str = "all") -> list[tuple[str, Table]]:
    """The stderr summary as (heading, table): headline numbers, splits, one split's classes."""
    t = result["thresholds"]
    tau = result["tau"]
    head = Table()
    for col in ("top-1 %", "top-5 %", "balanced %", "ECE %"):
        head.add_column(col, justify="right")
    head.add_row(pct(result["top1"]), pct(result["top5"]), pct(result["balanced_accuracy"]),
                 pct(result["calibration"]["ece"]))
    tables = [(f"{result['method']} on {result['on']}: {result['samples']} images, "
               f"{result['num_classes']} classes" + ("" if tau is None else
               f", tau-normalised with tau = {tau['value']:g} ({tau['mode']})"), head)]
    groups = Table()
    for col, just in (("split", "left"), ("classes", "right"), ("test images", "right"),
                      ("accuracy %", "right")):
        groups.add_column(col, justify=just)
    for name, row in split_rows(result):
        if split in ("all", name):
            groups.add_row(name, str(row["classes"]), str(row["samples"]),
                           pct(row["accuracy"]) if row["classes"] else "empty")
    tables.append((f"by training count: many > {t['many']} >= medium >= {t['few']} > few", groups))
    if result.get("retrieval"):
        tables.append(_retrieval_table(result["retrieval"], split))
    if split != "all":
        tables.append(_class_table(result, split))
    return tables


def _retrieval_table(retrieval: dict[str, Any], split: str) -> tuple[str, Table]:
    table = Table()
    for col, just in (("queries", "left"), ("count", "right"), ("mAP %", "right"),
                      ("rank-1 %", "right")):
        table.add_column(col, justify=just)
    table.add_row("all", str(retrieval["queries"]), pct(retrieval["map"]), pct(retrieval["rank1"]))
    for name in GROUPS:
        row = retrieval["splits"][name]
        if split in ("all", name):
            table.add_row(name, str(row["queries"]), pct(row["map"]), pct(row["rank1"]))
    return (f"retrieval ({retrieval['similarity']} similarity; "
            f"{retrieval['excluded_queries']} queries without a match left out)", table)


def _class_table(result: dict[str, Any], split: str) -> tuple[str, Table]:
    rows = sorted((r for r in result["per_class"] if r["split"] == split),
                  key=lambda r: (-r["train_count"], r["index"]))
    table = Table()
    for col, just in (("#", "right"), ("class", "left"), ("train", "right"), ("test", "right"),
                      ("accuracy %", "right")):
        table.add_column(col, justify=just)
    for r in rows:
        table.add_row(str(r["index"]), escape(r["name"]), str(r["train_count"]), str(r["test_count"]),
                      pct(r["accuracy"]))
    return f"{split} classes ({len(rows)})", table


def print_summary(result: dict[str, Any], split: str = "all") -> None:
    if console.is_quiet():
        return
    for heading, table in summary_tables(result, split):
        console.console.print(heading, soft_wrap=True)
        console.console.print(table)


def summary_markdown(result: dict[str, Any]) -> str:
    tau = result["tau"]
    lines = [f"# Evaluation: {result['method']} on {result['on']}", "",
             f"- input: `{result['source']['path']}` ({result['source']['kind']})",
             f"- store: `{result['store']['path']}`",
             f"- classifier: {result['classifier']['kind']}"
             + ("" if tau is None else f", tau-normalised with tau = {tau['value']:g} "
                f"({'chosen on val' if tau['mode'] == 'auto' else 'given'})"),
             f"- {result['samples']} {result['on']} images, {result['num_classes']} classes", "",
             "| top-1 % | top-5 % | balanced % | ECE % |", "| ---: | ---: | ---: | ---: |",
             f"| {pct(result['top1'])} | {pct(result['top5'])} | "
             f"{pct(result['balanced_accuracy'])} | {pct(result['calibration']['ece'])} |", "",
             f"Splits by training count: many > {result['thresholds']['many']} >= medium >= "
             f"{result['thresholds']['few']} > few.", "",
             "| split | classes | test images | accuracy % |", "| --- | ---: | ---: | ---: |"]
    for name, row in split_rows(result):
        lines.append(f"| {name} | {row['classes']} | {row['samples']} | "
                     f"{pct(row['accuracy']) if row['classes'] else 'empty'} |")
    if result.get("retrieval"):
        r = result["retrieval"]
        lines += ["", f"Retrieval ({r['similarity']} similarity): mAP {pct(r['map'])} %, "
                      f"rank-1 {pct(r['rank1'])} % over {r['queries']} queries."]
    worst = sorted((r for r in result["per_class"] if r["accuracy"] is not None),
                   key=lambda r: (r["accuracy"], r["train_count"]))[:10]
    lines += ["", "Lowest-accuracy classes:", "", "| class | split | train | accuracy % |",
              "| --- | --- | ---: | ---: |"]
    lines += [f"| {_md(r['name'])} | {r['split']} | {r['train_count']} | {pct(r['accuracy'])} |"
              for r in worst]
    lines += [""] + [f"![{alt}]({name})" for name, alt in PLOTS.items()] + [""]
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_per_class_csv(result: dict[str, Any], path: Path) -> None:
    fields = ["index", "name", "train_count", "test_count", "split", "fsa", "accuracy"]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in result["per_class"]:
            writer.writerow({f: "" if row[f] is None else row[f] for f in fields})


def is_report(folder: Path) -> bool:
    """True when ``folder`` is provably an ltkit report: a real folder (not a link) holding the
    marker and nothing but the report's own plain files."""
    try:
        if folder.is_symlink() or not folder.is_dir() or not (folder / MARKER).is_file():
            return False
        return all(entry.name in REPORT_FILES and stat.S_ISREG(entry.lstat().st_mode)
                   for entry in folder.iterdir())
    except OSError:
        return False


def check_report_dir(out_dir: str | Path, force: bool, inputs: tuple[str | Path | None, ...] = ()) -> Path:
    """The report folder, checked so that writing it can destroy nothing but an earlier report."""
    final = Path(out_dir).expanduser()
    check_name(final, reserve=len(".partial"))
    where = final.resolve()
    here = Path.cwd().resolve()
    if where == here or where in here.parents:
        raise ArtifactError(f"--report {out_dir} is the current folder or one above it; give a new "
                            "folder for the report (e.g. --report report)")
    for source in inputs:
        if source is not None and where in (Path(source).resolve(), *Path(source).resolve().parents):
            raise ArtifactError(f"--report {out_dir} holds this evaluation's input {source}; give a new "
                                "folder for the report")
    if final.exists() or final.is_symlink():
        if not force:
            raise ArtifactError(f"{final} already exists; choose another --report or pass --force to "
                                "replace it")
        if not is_report(final):
            raise ArtifactError(f"{final} exists and is not an earlier ltkit report (its marker {MARKER} "
                                "is missing, or it holds other files); --force only replaces a report: "
                                "choose another --report")
    partial = final.with_name(final.name + ".partial")
    if (partial.exists() or partial.is_symlink()) and not is_report(partial):
        raise ArtifactError(f"{partial} exists and is not an unfinished ltkit report; move it away, or "
                            "choose another --report")
    return final


def write_report(evaluation: Evaluation, out_dir: str | Path, *, force: bool = False) -> Path:
    """Write the report folder atomically; an existing one is replaced only with `force`, and
    only when it is an earlier report (see `check_report_dir`)."""
    result = evaluation.result
    inputs = (result["source"]["path"], result["store"]["path"], (result.get("table") or {}).get("path"))
    final = check_report_dir(out_dir, force, inputs)
    partial = final.with_name(final.name + ".partial")
    if partial.exists():  # a crashed earlier attempt, provably a report (checked above)
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    try:
        (partial / MARKER).write_text(f"ltkit evaluation report, format {result.get('format_version', 1)}\n")
        (partial / "metrics.json").write_text(json.dumps(result, indent=2, allow_nan=False))
        write_per_class_csv(result, partial / "per_class.csv")
        with open(partial / "confusion.csv", "w", newline="") as fh:  # row: true, column: predicted
            writer = csv.writer(fh)
            writer.writerow(["true\\predicted", *range(len(evaluation.confusion))])
            writer.writerows([i, *row] for i, row in enumerate(evaluation.confusion.tolist()))
        (partial / "summary.md").write_text(summary_markdown(result))
        names = [r["name"] for r in result["per_class"]]
        counts = [r["train_count"] for r in result["per_class"]]
        plot_per_class_accuracy(result["per_class"], result["thresholds"],
                                partial / "per_class_accuracy.png")
        plot_confusion(evaluation.confusion, names, counts, partial / "confusion_matrix.png")
        plot_reliability(result["calibration"], partial / "reliability.png")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if final.exists():  # only reachable with force, and only for an earlier report
        check_report_dir(final, force, inputs)  # again, right before: it may have changed meanwhile
        shutil.rmtree(final)
    os.replace(partial, final)
    return final
