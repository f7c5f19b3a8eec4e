"""``ltkit inspect``: what any ltkit artifact holds (`ltkit.inspection`), on stderr and as JSON."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ltkit.cli import app
from ltkit.cli.common import Debug, Json, Quiet, emit_json, run_stage
from ltkit.cli.helpstyle import stage


@stage(app, "inspect", example=["ltkit inspect runs/ce.h5", "ltkit inspect runs/backbone.pt --json --quiet > bb.json"])
def inspect_cmd(
    artifact: Annotated[str, typer.Argument(
        metavar="ARTIFACT", help="A feature store (.h5), backbone checkpoint (or its .partial resume state), "
                                 "classifier, confusing-class table, evaluation JSON, run log (.metrics.csv) or "
                                 "report folder; - reads the path from stdin.")],
    as_json: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Summarise an artifact on stderr: its kind (read from the file, not its name), config,
    lineage, history (the training curve) and class counts (many / medium / few); a store's
    splits, shapes and dtypes, provenance and size on disk."""
    from ltkit.inspect_view import render
    from ltkit.inspection import inspect_artifact
    from ltkit.outputs import resolve_input

    def run() -> dict[str, Any]:
        info = inspect_artifact(artifact if artifact != "-" else resolve_input(artifact))
        if not quiet:  # inside the boundary: a value render cannot print is one line, not a traceback
            render(info)
        return info

    info = run_stage(run, quiet=quiet, debug=debug)
    if as_json:
        emit_json(info)
