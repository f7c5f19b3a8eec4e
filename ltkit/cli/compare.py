"""``ltkit compare``: one table of several runs; the table is the result, on stdout."""

from __future__ import annotations

from typing import Annotated

import typer

from ltkit.cli import app
from ltkit.cli.common import Debug, Device, Quiet, run_stage
from ltkit.compare import FORMATS, compare
from ltkit.evaluate import EvalConfig


@app.command("compare", help="Compare runs: overall / many / medium / few / FSA tail / balanced "
             "accuracy, best per column marked, differences against the first run. Runs are "
             "evaluation JSONs, or classifiers / stores (evaluated on test with default options).")
def compare_cmd(
    runs: list[str] = typer.Argument(..., help="Evaluation JSONs, classifier artifacts or feature stores (one may be "
                                               "- for stdin)."),
    fmt: Annotated[str, typer.Option("--format", help=f"Output: {', '.join(FORMATS)}.")] = "table",
    device: Device = "auto",
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    text = run_stage(lambda: compare(runs, fmt=fmt, config=EvalConfig(device=device)),
                     quiet=quiet, debug=debug)
    typer.echo(text)
