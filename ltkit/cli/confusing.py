"""``ltkit confusing-classes``: head/tail split and the confusing classes of each tail class."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ltkit import console
from ltkit.cli import app
from ltkit.cli.common import Debug, Force, Out, Quiet, emit_path, run_stage


@app.command("confusing-classes")
def confusing_classes_cmd(
    store: Annotated[str, typer.Argument(help="Feature store, or - to read its path from stdin.")],
    head_ratio: Annotated[float, typer.Option("--head-ratio", help="Fraction of training images the head classes hold "
                                                                   "at least, in (0, 1); the rest are tail.")] = 0.9,
    top: Annotated[int, typer.Option("--top", help="Confusing classes kept per tail class (Nf).")] = 3,
    csv: Annotated[Path | None, typer.Option("--csv", help="Also export the table as CSV here (one row per tail class "
                                                           "and rank).")] = None,
    out: Out = None,
    force: Force = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Split classes into head and tail; rank each tail class's most confusing classes by the
    mean Phase-I softmax over its training images. Prints the table's path (default:
    <store stem>.table.pt beside the store)."""
    from ltkit.artifacts import resolve_input
    from ltkit.confusing import ConfusingConfig, build_table, default_table_path
    from ltkit.confusing_table import load_table

    def run() -> Path:
        cfg = ConfusingConfig(head_ratio=head_ratio, top=top)
        source = resolve_input(store)  # "-": the path from stdin, read once here
        before = _stamp(Path(out or default_table_path(source)).expanduser())
        path = build_table(source, cfg, out=out, force=force, csv_path=csv)
        if _stamp(path) != before:  # shown when (re)built, not when reused
            show_table(load_table(path))
        return path

    emit_path(run_stage(run, quiet=quiet, debug=debug))


def _stamp(path: Path) -> int | None:
    """The file's change time, None when there is none (the library says why a path is bad)."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def show_table(table) -> None:
    """A rich table on stderr: each tail class with its confusing classes and scores."""
    if console.is_quiet():
        return
    from rich.markup import escape
    from rich.table import Table

    names = [escape(str(n)) for n in table.class_names]  # shown as text, never as markup
    counts = table.train_counts
    head = ", ".join(names[c] for c in table.head_classes.tolist())
    view = Table(title=f"confusing classes (head ratio {table.head_ratio}: "
                       f"{len(table.head_classes)} head classes hold "
                       f"{table.head_fraction:.1%} of the images)")
    view.add_column("tail class")
    view.add_column("train", justify="right")
    for rank in range(table.top):
        view.add_column(f"#{rank + 1} (score)")
    for i, c in enumerate(table.tail_classes.tolist()):
        cells = [f"{names[u]} ({s:.3f})" for u, s in zip(table.confusing[i].tolist(), table.scores[i].tolist())]
        view.add_row(names[c], str(int(counts[c])), *cells)
    console.console.print(view)
    console.console.print(f"head: {head}", soft_wrap=True)  # names escaped above: print as is
