"""The ``ltkit`` command: one sub-command per stage, each in its own module."""

from __future__ import annotations

import typer

from ltkit import __version__

app = typer.Typer(
    name="ltkit",
    help="Long-tailed image recognition: train a backbone once, cache what it sees in an HDF5 "
         "feature store, try tail-class remedies from the cache.\n\n"
         "Pipeline: train-backbone | extract - | confusing-classes - | augment-finetune - | evaluate -",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the ltkit version and exit.")) -> None:
    pass


# Each module adds its command(s) to `app` on import, in the order `ltkit --help` lists them.
from ltkit.cli import (train, extract, inspect, confusing, finetune,  # noqa: E402,F401
                       evaluate, compare, plots)


def main() -> None:
    app()
