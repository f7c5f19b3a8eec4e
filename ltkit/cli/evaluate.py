"""``ltkit evaluate``: measure a classifier (or a store's Phase-I classifier); JSON on stdout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ltkit import choices
from ltkit.cli import app
from ltkit.cli.common import TAU_HELP, Debug, Device, Force, Quiet, emit_json, parse_tau, run_stage
from ltkit.cli.helpstyle import INPUT, MEASURE, OUTPUT, choice, completer, stage
from ltkit.errors import ConfigError


@stage(app, "evaluate", help="Measure a classifier on the store's pooled features: top-1/top-5, "
       "balanced, per class, many/medium/few, FSA head/tail, calibration (and retrieval). "
       "stdout: one JSON object (keys in docs/evaluate.md); stderr: a summary table.", example=[
           "ltkit evaluate runs/ce.fsa.pt --report runs/ce.fsa.report",
           "ltkit evaluate runs/ce.h5 --tau auto --group few"])
def evaluate_cmd(
    source: str = typer.Argument(..., help="Classifier artifact or feature store, or - to read its path from stdin."),
    store: Annotated[str | None, typer.Option("--store", help="The feature store to use instead of the one in the "
                                                              "classifier's lineage (one of the same backbone and "
                                                              "classes; --force to use another anyway).",
                                              rich_help_panel=INPUT)] = None,
    table: Annotated[str | None, typer.Option("--table", help="Confusing-class table for the FSA head/tail split, "
                                                              "instead of the lineage's.", rich_help_panel=INPUT)
                     ] = None,
    bound: Annotated[str | None, typer.Option("--bound", help="The same head trained on the store's bound split "
                                                              "(augment-finetune --train-on bound): adds a bound "
                                                              "section, with the classifier gap closed.",
                                              rich_help_panel=INPUT)] = None,
    split: Annotated[str, choice("--split", "Store split measured", choices.EVAL_SPLITS, panel=MEASURE,
                                 note="bound: the store's balanced held-out split, when it has one.")] = "test",
    val_part: Annotated[str, choice("--val-part", "With --split val: the images measured", choices.VAL_PARTS,
                                    panel=MEASURE, note="tune / select: a stratified half (per class, alternate "
                                                        "images), as ltkit sweep uses them.")] = "all",
    tau: Annotated[str | None, typer.Option("--tau", help=f"Post-hoc, on a linear/LWS classifier: {TAU_HELP}",
                                            rich_help_panel=MEASURE,
                                            autocompletion=completer(["auto"]))] = None,
    metric: Annotated[str, choice("--metric", "Metric", choices.EVAL_METRICS, panel=MEASURE,
                                  note="retrieval: also mAP / rank-1 of pooled features as queries against the rest "
                                       "of the split.")] = "accuracy",
    many_threshold: Annotated[int, typer.Option("--many-threshold", help="many: more training images than this.",
                                                rich_help_panel=MEASURE)] = 100,
    few_threshold: Annotated[int, typer.Option("--few-threshold", help="few: fewer training images than this (medium: "
                                                                       "between, both ends included).",
                                               rich_help_panel=MEASURE)] = 20,
    ece_bins: Annotated[int, typer.Option("--ece-bins", help="Equal-width confidence bins of the expected calibration "
                                                             "error.", rich_help_panel=MEASURE)] = 15,
    group: Annotated[str, choice("--group", "Classes the stderr summary shows", choices.SUMMARY_GROUPS,
                                 panel=OUTPUT)] = "all",
    report: Annotated[Path | None, typer.Option("--report", help="Also write a report folder: metrics.json, "
                                                                 "per_class.csv, confusion.csv, summary.md, PNG plots.",
                                                rich_help_panel=OUTPUT)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The result is one JSON object on stdout, with or without "
                                                         "--json (taken like inspect's, compare's and "
                                                         "confusing-classes').", rich_help_panel=OUTPUT)] = False,
    device: Device = "auto",
    force: Force = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    from ltkit import console
    from ltkit.evaluate import EvalConfig, evaluate
    from ltkit.registry import check_choice
    from ltkit.report import check_report_dir, print_summary, write_report

    def run() -> dict:
        if split in choices.GROUPS:  # the old meaning of --split: say the new name in one line
            raise ConfigError(f"--split is the store split measured ({', '.join(choices.EVAL_SPLITS)}); the classes "
                              f"the summary shows are --group {split}")
        check_choice(split, choices.EVAL_SPLITS, "--split")
        check_choice(group, choices.SUMMARY_GROUPS, "--group")
        check_choice(metric, choices.EVAL_METRICS, "--metric")
        config = EvalConfig(on=split, val_part=val_part, tau=parse_tau(tau), many_threshold=many_threshold,
                            few_threshold=few_threshold, ece_bins=ece_bins,
                            retrieval=metric == "retrieval", device=device)
        if report is not None:
            check_report_dir(report, force, (None if source == "-" else source,))  # before the work
        evaluation = evaluate(source, config, store=store, table=table, force=force, bound=bound)
        print_summary(evaluation.result, group)
        if report is not None:
            console.log(f"report: {write_report(evaluation, report, force=force)}")
        return evaluation.result

    emit_json(run_stage(run, quiet=quiet, debug=debug), f"the report is in {report}" if report else "")
