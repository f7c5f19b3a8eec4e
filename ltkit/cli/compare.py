"""``ltkit compare``: one table of several runs; the table is the result, on stdout."""

from __future__ import annotations

from typing import Annotated

import typer

from ltkit import choices
from ltkit.cli import app
from ltkit.cli.common import Debug, Device, Json, Quiet, run_stage
from ltkit.cli.helpstyle import MEASURE, OUTPUT, choice, stage
from ltkit.errors import ConfigError


@stage(app, "compare", help="Compare runs: overall / many / medium / few / FSA tail / balanced "
       "accuracy, best per column marked, differences against the first run. Runs are "
       "evaluation JSONs, or classifiers / stores (evaluated on test with default options).", example=[
           "ltkit compare runs/ce.h5 runs/ce.fsa.pt runs/ce.crt.pt --format markdown",
           "ltkit evaluate runs/ce.fsa.pt | ltkit compare runs/ce.h5 - --json"])
def compare_cmd(
    runs: list[str] = typer.Argument(..., help="Evaluation JSONs, classifier artifacts or feature stores (one may be "
                                               "- for stdin)."),
    fmt: Annotated[str, choice("--format", "Output", choices.COMPARE_FORMATS, panel=OUTPUT,
                               note="json: the same as --json.")] = "table",
    as_json: Json = False,
    ceiling: Annotated[str | None, typer.Option("--ceiling", help="A run (evaluation JSON, classifier or store, e.g. a "
                                                                  "backbone trained on balanced data) whose balanced "
                                                                  "accuracy is the ceiling: adds 'gap closed' = (run "
                                                                  "- Phase I) / (ceiling - Phase I).",
                                                rich_help_panel=MEASURE)] = None,
    device: Device = "auto",
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    from ltkit.compare import compare
    from ltkit.evaluate import EvalConfig

    def run() -> str:
        if as_json and fmt not in ("table", "json"):
            raise ConfigError(f"--json prints JSON; it does not go with --format {fmt}")
        return compare(runs, fmt="json" if as_json else fmt, config=EvalConfig(device=device),
                       ceiling=ceiling)

    typer.echo(run_stage(run, quiet=quiet, debug=debug))
