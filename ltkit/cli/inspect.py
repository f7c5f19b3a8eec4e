"""``ltkit inspect``: what a feature store holds, where it came from, how big it is."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ltkit.cli import app
from ltkit.cli.common import Debug, Json, Quiet, emit_json, run_stage
from ltkit.cli.helpstyle import stage

ROWS_SHOWN = 30  # class rows printed at each end of the table when there are more than twice this


def render(info: dict[str, Any]) -> None:
    """The human summary, on stderr. Paths, names and provenance come from the file: they are
    printed as text (escaped), never read as rich markup."""
    import numpy as np
    from rich.markup import escape
    from rich.table import Table

    from ltkit import console

    out = console.console
    size = info["size_bytes"]
    out.print(f"[bold]{escape(info['path'])}[/bold]  ltkit feature store v{info['schema_version']}, "
              f"{size / 2**20:.1f} MiB", soft_wrap=True)
    arrays = Table("split", "array", "shape", "dtype", box=None, pad_edge=False)
    for split, body in info["splits"].items():
        for name, spec in body["arrays"].items():
            arrays.add_row(escape(split), escape(name), "x".join(map(str, spec["shape"])), spec["dtype"])
    out.print(arrays)
    counts = np.array([c["train_count"] for c in info["classes"]])
    g = info["groups"]
    out.print(f"{len(counts)} classes, {counts.sum()} training images (largest {counts.max()}, "
              f"smallest {counts.min()}): many {g['many']}, medium {g['medium']}, few {g['few']}",
              soft_wrap=True)
    classes = Table("class", "name", "train", "group", box=None, pad_edge=False)
    shown = range(len(counts)) if len(counts) <= 2 * ROWS_SHOWN else [*range(ROWS_SHOWN), -1,
                                                                      *range(len(counts) - ROWS_SHOWN, len(counts))]
    for k in shown:
        if k < 0:  # thousands of rows on a terminal help nobody: the ends, and where the rest is
            classes.add_row("...", f"{len(counts) - 2 * ROWS_SHOWN} more (--json lists all)", "", "")
            continue
        c = info["classes"][k]
        classes.add_row(str(k), escape(c["name"]), str(c["train_count"]), c["group"])
    out.print(classes)
    p, head = info["provenance"], info["classifier"]
    scale = f", scale {head['scale']:g}" if head["scale"] is not None else ""
    out.print(escape(f"backbone: {p['arch']} ({p['head']} head{scale}), maps from {p['layer']}, "
              f"{'x'.join(map(str, info['feature_shape']))}; kept for "
              f"{', '.join(info['spatial_splits']) or 'no split'}; {info['train_views']} augmented views"),
              soft_wrap=True)
    out.print(escape(f"from {p['backbone_path']} (sha256 {str(p['backbone_sha256'])[:12]}), data set "
                     f"{p['dataset'].get('name')}, ltkit {p['ltkit_version']}, seed {p['seed']}, "
                     f"created {p['created']}"), soft_wrap=True)


@stage(app, "inspect", example=["ltkit inspect runs/ce.h5", "ltkit inspect runs/ce.h5 --json --quiet > ce.json"])
def inspect_cmd(
    store: Annotated[str, typer.Argument(help="Feature store (.h5), or - to read its path from stdin.")],
    as_json: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Summarise a feature store on stderr: splits, shapes, dtypes, per-class counts
    (many / medium / few), provenance, size on disk."""
    from ltkit.artifacts import resolve_input
    from ltkit.store import describe, open_store

    def run() -> dict[str, Any]:
        with open_store(resolve_input(store)) as st:
            info = describe(st)
        if not quiet:  # inside the boundary: a value render cannot print is one line, not a traceback
            render(info)
        return info

    info = run_stage(run, quiet=quiet, debug=debug)
    if as_json:
        emit_json(info)
