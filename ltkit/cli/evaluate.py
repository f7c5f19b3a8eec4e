"""``ltkit evaluate``: measure a classifier (or a store's Phase-I classifier); JSON on stdout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ltkit import console
from ltkit.cli import app
from ltkit.cli.common import Debug, Device, Force, Quiet, emit_json, run_stage
from ltkit.evaluate import EVAL_SPLITS, EvalConfig, evaluate
from ltkit.registry import check_choice
from ltkit.report import SUMMARY_SPLITS, check_report_dir, print_summary, write_report

METRICS = ("accuracy", "retrieval")


def parse_tau(text: str | None) -> float | str | None:
    if text is None or text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise typer.BadParameter(f"--tau takes a number (e.g. 1.0) or 'auto', got {text!r}") from None


@app.command("evaluate", help="Measure a classifier on the store's pooled features: top-1/top-5, "
             "balanced, per class, many/medium/few, FSA head/tail, calibration (and retrieval). "
             "stdout: one JSON object (keys in docs/evaluate.md); stderr: a summary table.")
def evaluate_cmd(
    source: str = typer.Argument(..., help="Classifier artifact or feature store, or - to read its path from stdin."),
    on: Annotated[str, typer.Option("--on", help="Split measured: test or val.")] = "test",
    tau: Annotated[str | None, typer.Option("--tau", help="Post-hoc tau-normalisation of a linear/LWS classifier: an "
                                                          "exponent, or 'auto' (chosen on val by balanced accuracy, "
                                                          "grid 0..2 step 0.1).")] = None,
    split: Annotated[str, typer.Option("--split", help="What the stderr summary shows: all, or one split's classes "
                                                       "(many, medium, few).")] = "all",
    metric: Annotated[str, typer.Option("--metric", help="accuracy, or retrieval: also mAP / rank-1 of pooled "
                                                         "features as queries against the rest of the split.")
                      ] = "accuracy",
    many_threshold: Annotated[int, typer.Option("--many-threshold", help="many: "
                                                                         "more training images than this.")] = 100,
    few_threshold: Annotated[int, typer.Option("--few-threshold", help="few: fewer training images than this (medium: "
                                                                       "between, both ends included).")] = 20,
    ece_bins: Annotated[int, typer.Option("--ece-bins", help="Equal-width confidence bins of the expected calibration "
                                                             "error.")] = 15,
    store: Annotated[str | None, typer.Option("--store", help="The feature store to use instead of the one in the "
                                                              "classifier's lineage (one of the same backbone and "
                                                              "classes; --force to use another anyway).")] = None,
    table: Annotated[str | None, typer.Option("--table", help="Confusing-class table for the FSA head/tail split, "
                                                              "instead of the lineage's.")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Also write a report folder: metrics.json, "
                                                                 "per_class.csv, "
                                                                 "confusion.csv, summary.md, PNG plots.")] = None,
    device: Device = "auto",
    force: Force = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    config = EvalConfig(on=on, tau=parse_tau(tau), many_threshold=many_threshold,
                        few_threshold=few_threshold, ece_bins=ece_bins,
                        retrieval=metric == "retrieval", device=device)

    def run() -> dict:
        check_choice(on, EVAL_SPLITS, "--on")
        check_choice(split, SUMMARY_SPLITS, "--split")
        check_choice(metric, METRICS, "--metric")
        if report is not None:
            check_report_dir(report, force, (None if source == "-" else source,))  # before the work
        evaluation = evaluate(source, config, store=store, table=table, force=force)
        print_summary(evaluation.result, split)
        if report is not None:
            console.log(f"report: {write_report(evaluation, report, force=force)}")
        return evaluation.result

    emit_json(run_stage(run, quiet=quiet, debug=debug), f"the report is in {report}" if report else "")
