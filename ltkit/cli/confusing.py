"""``ltkit confusing-classes``: head/tail split and the confusing classes of each tail class."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ltkit.cli import app
from ltkit.cli.common import Debug, Force, Out, Quiet, emit_path, run_stage


@app.command("confusing-classes")
def confusing_classes_cmd(
    store: Annotated[str, typer.Argument(help="Feature store, or - to read its path from stdin.")],
    head_ratio: Annotated[float, typer.Option("--head-ratio", help="Fraction of training images the head classes hold at least, in (0, 1); the rest are tail.")] = 0.9,
    top: Annotated[int, typer.Option("--top", help="Confusing classes kept per tail class (Nf).")] = 3,
    csv: Annotated[Optional[Path], typer.Option("--csv", help="Also export the table as CSV here (one row per tail class and rank).")] = None,
    out: Out = None,
    force: Force = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Split classes into head and tail; rank each tail class's most confusing classes by the
    mean Phase-I softmax over its training images. Prints the table's path (default:
    <store stem>.table.pt beside the store)."""
    from ltkit.confusing import ConfusingConfig, build_table

    def run() -> Path:
        cfg = ConfusingConfig(head_ratio=head_ratio, top=top)
        return build_table(store, cfg, out=out, force=force, csv_path=csv)

    emit_path(run_stage(run, quiet=quiet, debug=debug))
