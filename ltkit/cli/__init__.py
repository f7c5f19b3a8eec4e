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


def _register_commands() -> None:
    # Each module adds its command(s) to `app` on import.
    import importlib

    for name in ("train", "extract", "inspect", "confusing", "finetune", "evaluate", "compare", "plots"):
        try:
            importlib.import_module(f"ltkit.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"ltkit.cli.{name}":
                raise


_register_commands()


def main() -> None:
    app()
