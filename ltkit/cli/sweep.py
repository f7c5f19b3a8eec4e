"""``ltkit sweep``: every Phase-II method on one store, chosen on validation; the chosen classifier's path on stdout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ltkit import choices
from ltkit.cli import app
from ltkit.cli.common import Debug, Device, Quiet, emit_path, run_stage
from ltkit.cli.helpstyle import METHOD, OPTIMISER, OUTPUT, choice, stage


@stage(app, "sweep", help="Run every Phase-II method that applies to the store (every classifier with its default "
       "augmenter, every augmenter with cRT) for several seeds, each choosing its own options on validation "
       "images; compare them on held-out images none of them chose on (--select-on) and on test (mean ± std over "
       "seeds; the chosen method's test rank); print the path of the classifier of the method best on the "
       "selection data (its first seed).", example=[
           "ltkit sweep runs/fm/features.h5 | ltkit evaluate -",
           "ltkit sweep runs/fm/features.table.pt --seeds 5 --out runs/fm/sweep"])
def sweep_cmd(
    source: Annotated[str, typer.Argument(help="Feature store (its confusing-class table is built with the defaults, "
                                               "in the sweep folder), a confusing-class table, or - to read the path "
                                               "from stdin.")],
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Runs per trained method, seeds 0..N-1 (a training-free "
                                                              "method runs once).", rich_help_panel=METHOD)] = 3,
    iterations: Annotated[int | None, typer.Option("--iterations", min=1, help="SGD steps of every trained run "
                                                                               "(default: each method's own "
                                                                               "schedule).",
                                                   rich_help_panel=OPTIMISER)] = None,
    select_on: Annotated[str, choice("--select-on", "Data the method is chosen on", choices.SELECT_ON, panel=METHOD,
                                     note="val: methods choose their own options on one stratified half of the "
                                          "validation split, the sweep compares them on the other; bound: methods "
                                          "choose on val, the sweep compares on the store's balanced bound split; "
                                          "auto: bound when the store has one, else val.")] = "auto",
    out: Annotated[Path | None, typer.Option("--out", help="The sweep folder (default: STORE.sweep/ beside the input): "
                                                           "every run, sweep.md, sweep.csv, sweep.json. An earlier "
                                                           "sweep there is resumed.", rich_help_panel=OUTPUT)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier sweep folder instead of resuming it "
                                                        "(never any other folder).", rich_help_panel=OUTPUT)] = False,
    device: Device = "auto",
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    from ltkit.sweep import SweepConfig, sweep

    emit_path(run_stage(lambda: sweep(source, SweepConfig(seeds=seeds, iterations=iterations, device=device,
                                                                  select_on=select_on),
                                      out=out, force=force), quiet=quiet, debug=debug))
