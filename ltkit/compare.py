"""`ltkit compare`: one table of several evaluations, best value per column marked.

A run is an evaluation JSON (what `ltkit evaluate` printed, or a report's metrics.json), or
a classifier / store, which is evaluated here with the default options. Each row names the
run, its method and the options that tell it apart from the other runs; the columns are
accuracies in % (overall top-1, many / medium / few, the FSA tail, balanced), each row after
the first also shows its difference to the first run in percentage points.

Two shares of a gap are shown when known (`ltkit.bound`): **classifier gap closed**, from an
evaluation's ``bound`` section (``evaluate CLF --bound BOUND_CLF``): (balanced accuracy - Phase
I) / (bound - Phase I); and, with ``--ceiling RUN`` (e.g. a backbone trained on balanced
data), **gap closed** = (balanced accuracy - Phase I) / (ceiling - Phase I), Phase I taken
from the bound section or from a compared run of the store itself (method phase1).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ltkit import choices, console
from ltkit.artifacts import resolve_input
from ltkit.bound import gap_closed
from ltkit.errors import ConfigError
from ltkit.evaluate import EvalConfig, artifact_kind, evaluate
from ltkit.evaluation_json import load_evaluation, parse_evaluation
from ltkit.registry import check_choice
from ltkit.runoptions import RUN_FIELDS

FORMATS = choices.COMPARE_FORMATS
COLUMNS = ("overall", "many", "medium", "few", "tail", "balanced")
GAPS = {"clf_gap": "classifier gap closed", "gap": "gap closed"}  # shares, shown when some run has one
MAX_OPTIONS = 6  # options shown per run; the rest are elided
# recorded beside the options but not what makes a run: how it ran (RunOptions, as a "run"
# group or, in artifacts of before, flat), and "request" (the options as asked, kept for
# reruns; the resolved ones show)
NOT_OPTIONS = RUN_FIELDS | {"run", "request"}


@dataclass
class Row:
    run: str                          # the evaluated file's name
    method: str                       # the classifier's method (phase1 for a store's own)
    options: str                      # "key=value, ..." that differ between the runs
    values: dict[str, float | None]   # column -> accuracy in [0, 1], None where empty / absent


def load_run(path: str | Path, config: EvalConfig | None = None) -> tuple[str, dict[str, Any]]:
    """(run name, evaluation): a JSON as is (named by its file), an artifact evaluated here.
    ``-``: stdin holds the evaluation JSON itself (``ltkit evaluate ... | ltkit compare - ...``)
    or the path of a run."""
    if str(path) == "-":
        text = sys.stdin.read()
        if text.lstrip().startswith(("{", "[")):
            return "stdin", parse_evaluation(text, "the evaluation on stdin")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            raise ConfigError("run '-' means read an evaluation JSON (or a path) from stdin, but stdin "
                              "was empty; pipe ltkit evaluate's output in, or give the path")
        path = lines[-1]
    resolved = resolve_input(path)
    if artifact_kind(resolved) == "json":
        return resolved.stem, load_evaluation(resolved)
    console.log(f"evaluating {resolved}")
    return resolved.name, evaluate(resolved, config or EvalConfig()).result


def column_values(result: dict[str, Any]) -> dict[str, float | None]:
    splits, fsa = result["splits"], result.get("fsa")
    return {"overall": result["top1"], "many": splits["many"]["accuracy"],
            "medium": splits["medium"]["accuracy"], "few": splits["few"]["accuracy"],
            "tail": fsa["tail"]["accuracy"] if fsa else None,
            "balanced": result["balanced_accuracy"]}


def flat_options(result: dict[str, Any]) -> dict[str, str]:
    """The run's options as "dotted.key" -> text (devices and measured values left out)."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k not in NOT_OPTIONS:  # a whole group left out (e.g. request)
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, (list, tuple)):
            out[prefix] = ",".join(map(str, value))
        elif prefix.rsplit(".", 1)[-1] not in NOT_OPTIONS and not prefix.endswith("_acc"):
            out[prefix] = f"{value:g}" if isinstance(value, float) else str(value)

    walk("", result.get("options") or {})
    return out


def phase1_of(result: dict[str, Any], results: Sequence[dict[str, Any]]) -> float | None:
    """Phase I's balanced accuracy for a run: its bound section's, else a compared phase1 run's
    on the same store and split."""
    if result.get("bound"):
        return result["bound"]["phase1_balanced_accuracy"]
    same = [r for r in results if r.get("method") == "phase1" and r["store"]["path"] == result["store"]["path"]
            and r["on"] == result["on"]]
    return same[0]["balanced_accuracy"] if same else None


def gap_values(result: dict[str, Any], results: Sequence[dict[str, Any]],
               ceiling: float | None) -> dict[str, float | None]:
    bound = result.get("bound") or {}
    return {"clf_gap": bound.get("classifier_gap_closed"),
            "gap": gap_closed(result["balanced_accuracy"], phase1_of(result, results), ceiling)}


def compare_rows(results: Sequence[dict[str, Any]],
                 names: Sequence[str] | None = None, ceiling: float | None = None) -> list[Row]:
    """One row per evaluation. Options shown: those that tell a run apart from the other runs
    of its method (another method's options are not comparable), and the post-hoc tau.
    ``ceiling``: a balanced accuracy the gap closed is measured against."""
    names = list(names) if names else [Path(r["source"]["path"]).name for r in results]
    total = {n: names.count(n) for n in names}
    seen: dict[str, int] = {}
    for i, name in enumerate(names):  # the same file twice (e.g. with two taus): number them
        if total[name] > 1:
            seen[name] = seen.get(name, 0) + 1
            names[i] = f"{name} #{seen[name]}"
    flats = [flat_options(r) for r in results]
    methods = [r.get("method", "?") for r in results]
    rows = []
    for name, result, flat, method in zip(names, results, flats, methods):
        peers = [f for f, m in zip(flats, methods) if m == method]
        shown = [f"{k}={v}" for k, v in flat.items() if len({p.get(k) for p in peers}) > 1]
        if len(shown) > MAX_OPTIONS:
            shown = shown[:MAX_OPTIONS] + ["…"]
        tau = result.get("tau")
        if tau is not None:
            shown.append(f"tau={tau['value']:g}" + (" (auto)" if tau["mode"] == "auto" else ""))
        rows.append(Row(name, method, ", ".join(shown),
                        column_values(result) | gap_values(result, results, ceiling)))
    return rows


def shown_columns(rows: Sequence[Row]) -> tuple[str, ...]:
    """The accuracy columns, and the gap shares some run has."""
    return COLUMNS + tuple(c for c in GAPS if any(r.values.get(c) is not None for r in rows))


def best_values(rows: Sequence[Row]) -> dict[str, float | None]:
    """Column -> its highest value (None when no run has one, or fewer than two runs)."""
    columns = shown_columns(rows)
    if len(rows) < 2:
        return {c: None for c in columns}
    out = {}
    for c in columns:
        present = [r.values[c] for r in rows if r.values[c] is not None]
        out[c] = max(present) if present else None
    return out


def _cell(row: Row, first: Row, column: str, best: float | None, mark: str) -> str:
    value = row.values[column]
    if value is None:
        return "—"
    text = f"{100 * value:.2f}"
    if column in GAPS:
        text = f"{100 * value:.0f} %"
    elif row is not first and first.values[column] is not None:
        text += f" ({100 * (value - first.values[column]):+.2f})"
    return mark.format(text) if best is not None and value == best else text


def render(rows: Sequence[Row], fmt: str = "table") -> str:
    """The comparison as a text table (rich, best marked *), Markdown (best bold), CSV or JSON."""
    check_choice(fmt, FORMATS, "--format")
    best = best_values(rows)
    columns = shown_columns(rows)
    heads = ["run", "method", "options", *(GAPS.get(c, f"{c} %") for c in columns)]
    if fmt == "csv":
        return _csv(rows, best, columns)
    if fmt == "json":
        return _json(rows, best)
    mark = "**{}**" if fmt == "markdown" else "{} *"
    body = [[r.run, r.method, r.options, *(_cell(r, rows[0], c, best[c], mark) for c in columns)]
            for r in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(heads) + " |",
                 "| " + " | ".join(["---"] * 3 + ["---:"] * len(columns)) + " |"]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |"
                  for line in body]
        return "\n".join(lines)
    table = Table(caption="accuracy in %; (±x): points against the first run; *: best in column")
    for i, head in enumerate(heads):
        table.add_column(head, justify="left" if i < 3 else "right", overflow="fold")
    for line in body:
        table.add_row(*line)
    buffer = io.StringIO()
    Console(file=buffer, width=220, color_system=None, highlight=False).print(table)
    return buffer.getvalue().rstrip("\n")


def _csv(rows: Sequence[Row], best: dict[str, float | None], columns: tuple[str, ...] = COLUMNS) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    gaps = [c for c in columns if c in GAPS]
    writer.writerow(["run", "method", "options", *(f"{c}_pct" for c in COLUMNS),
                     *(f"{c}_delta_pct" for c in COLUMNS), "best", *(f"{c}_pct" for c in gaps)])
    first = rows[0] if rows else None
    for r in rows:
        values = ["" if r.values[c] is None else f"{100 * r.values[c]:.4f}" for c in COLUMNS]
        deltas = ["" if r.values[c] is None or first.values[c] is None
                  else f"{100 * (r.values[c] - first.values[c]):.4f}" for c in COLUMNS]
        marks = [c for c in COLUMNS if best[c] is not None and r.values[c] == best[c]]
        shares = ["" if r.values[c] is None else f"{100 * r.values[c]:.4f}" for c in gaps]
        writer.writerow([r.run, r.method, r.options, *values, *deltas, ";".join(marks), *shares])
    return buffer.getvalue().rstrip("\n")


def _json(rows: Sequence[Row], best: dict[str, float | None]) -> str:
    """``{"columns": [...], "runs": [{run, method, options, accuracy, delta, best, clf_gap, gap}]}``:
    accuracies and gap shares in [0, 1] (null where empty or absent), deltas against the first run."""
    first = rows[0] if rows else None
    runs = [{"run": r.run, "method": r.method, "options": r.options,
             "accuracy": {c: r.values[c] for c in COLUMNS},
             "delta": {c: None if r.values[c] is None or first.values[c] is None
                       else r.values[c] - first.values[c] for c in COLUMNS},
             "best": [c for c in COLUMNS if best[c] is not None and r.values[c] == best[c]],
             **{c: r.values.get(c) for c in GAPS}} for r in rows]
    return json.dumps({"columns": list(COLUMNS), "runs": runs}, indent=2, allow_nan=False)


def check_comparable(results: Sequence[dict[str, Any]]) -> None:
    """Warn when the runs were not measured on the same images with the same splits."""
    def key(r: dict[str, Any]) -> tuple:
        return (r["store"]["path"], r["on"], r["thresholds"]["many"], r["thresholds"]["few"])

    if len({key(r) for r in results}) > 1:
        console.warn("the runs were measured on different stores, splits or thresholds; their "
                     "numbers are not directly comparable")


def compare(paths: Sequence[str | Path], *, fmt: str = "table",
            config: EvalConfig | None = None, ceiling: str | Path | None = None) -> str:
    """Load (or evaluate) every run and render the comparison; ``ceiling``: a run (evaluation
    JSON, classifier or store) whose balanced accuracy is the ceiling of the gap closed."""
    check_choice(fmt, FORMATS, "--format")
    if not paths:
        raise ConfigError("compare needs at least one run: evaluation JSONs, classifiers or stores")
    if sum(str(p) == "-" for p in paths) > 1:
        raise ConfigError("only one run can be read from stdin ('-')")
    names, results = zip(*(load_run(p, config) for p in paths))
    check_comparable(results)
    top = load_run(ceiling, config)[1]["balanced_accuracy"] if ceiling is not None else None
    return render(compare_rows(results, names, top), fmt)
