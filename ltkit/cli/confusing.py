"""``ltkit confusing-classes``: head/tail split and the confusing classes of each tail class."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ltkit.cli import app
from ltkit.cli.common import Debug, Force, Json, Out, Quiet, emit_json, emit_path, run_stage
from ltkit.cli.helpstyle import METHOD, OUTPUT, stage


@stage(app, "confusing-classes", example=[
    "ltkit confusing-classes runs/ce.h5 --head-ratio 0.9 --top 3",
    "ltkit confusing-classes runs/ce.h5 --json | jq '.tail[0]'"])
def confusing_classes_cmd(
    store: Annotated[str, typer.Argument(help="Feature store, or - to read its path from stdin.")],
    head_ratio: Annotated[float, typer.Option("--head-ratio", help="Fraction of training images the head classes hold "
                                                                   "at least, in (0, 1); the rest are tail.",
                                              rich_help_panel=METHOD)] = 0.9,
    top: Annotated[int, typer.Option("--top", help="Confusing classes kept per tail class (Nf).",
                                      rich_help_panel=METHOD)] = 3,
    csv: Annotated[Path | None, typer.Option("--csv", help="Also export the table as CSV here (one row per tail class "
                                                           "and rank).", rich_help_panel=OUTPUT)] = None,
    as_json: Json = False,
    out: Out = None,
    force: Force = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Split classes into head and tail; rank each tail class's most confusing classes by the
    mean Phase-I softmax over its training images. Prints the table's path (default:
    <store stem>.table.pt beside the store), or with --json the table itself."""
    from ltkit.artifacts import resolve_input
    from ltkit.confusing import ConfusingConfig, build_table, default_table_path
    from ltkit.confusing_table import load_table

    def run() -> tuple[Path, object]:
        cfg = ConfusingConfig(head_ratio=head_ratio, top=top)
        source = resolve_input(store)  # "-": the path from stdin, read once here
        before = _stamp(Path(out or default_table_path(source)).expanduser())
        path = build_table(source, cfg, out=out, force=force, csv_path=csv)
        table = load_table(path)
        if _stamp(path) != before:  # shown when (re)built, not when reused
            show_table(table)
        return path, table

    path, table = run_stage(run, quiet=quiet, debug=debug)
    if as_json:
        emit_json(table_json(path, table), f"the table is {path}")
    else:
        emit_path(path)


def table_json(path: Path, table) -> dict:
    """The table as JSON: the head/tail split, and each tail class's confusing classes by rank."""
    names = [str(n) for n in table.class_names]
    return {"path": str(path), "head_ratio": table.head_ratio, "head_fraction": float(table.head_fraction),
            "head": [names[c] for c in table.head_classes.tolist()],
            "tail": [{"class": names[c], "train": int(table.train_counts[c]),
                      "confusing": [{"class": names[u], "score": float(s)}
                                    for u, s in zip(table.confusing[i].tolist(), table.scores[i].tolist())]}
                     for i, c in enumerate(table.tail_classes.tolist())]}


def _stamp(path: Path) -> int | None:
    """The file's change time, None when there is none (the library says why a path is bad)."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def show_table(table) -> None:
    """A rich table on stderr: each tail class with its confusing classes and scores."""
    from ltkit import console

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
