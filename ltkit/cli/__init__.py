"""The ``ltkit`` command: one sub-command per stage, each in its own module.

Importing this package imports no torch: each command imports the library it calls inside
its function, and the choices its options list come from ltkit/choices.py. So ``--help``,
``--version`` and shell completion answer at once (tests/test_cli_fast.py checks it)."""

from __future__ import annotations

import typer

from ltkit import __version__

app = typer.Typer(
    name="ltkit",
    help="Long-tailed image recognition: train a backbone once, cache what it sees in an HDF5 "
         "feature store, try tail-class remedies from the cache.\n\n"
         "Pipeline: train-backbone | extract - | confusing-classes - | augment-finetune - | evaluate -\n\n"
         "Or, from a store: sweep - | evaluate - (every Phase-II method, chosen on held-out data).\n\n"
         "Every stage also takes --config FILE.toml (a [STAGE] table of long option names without "
         "dashes, e.g. batch-size = 64; command-line options win) and --print-config (print the "
         "resolved options as that table, and exit).",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion; completing reads no torch
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
from ltkit.cli import compare, confusing, evaluate, extract, finetune, inspect, plots, sweep, train  # noqa: E402,F401


def main() -> None:
    """The ``ltkit`` entry point: a usage error (unknown option, bad value) is one line on
    stderr and exit 2, like every other refusal."""
    import sys

    try:  # typer >= 0.20 carries its own copy of click
        from typer._click.exceptions import UsageError
    except ImportError:
        from click.exceptions import UsageError

    from ltkit.cli.config import load_defaults, resolved_table, split_argv
    from ltkit.errors import LtkitError

    try:
        argv, config, show = split_argv(sys.argv[1:])
        group = typer.main.get_command(app)
        stage = next((a for a in argv if not a.startswith("-")), None)
        command = getattr(group, "commands", {}).get(stage)
        defaults = {stage: load_defaults(config, stage, command)} if config and command else None
        if show and command is not None:
            ctx = command.make_context(stage, argv[argv.index(stage) + 1:], default_map=(defaults or {}).get(stage))
            typer.echo(resolved_table(stage, command, ctx.params), nl=False)
            sys.exit(0)
        code = app(args=argv, prog_name="ltkit", standalone_mode=False, default_map=defaults)
    except LtkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        code = 2
    except UsageError as exc:
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:  # a stage without arguments
            typer.echo(ctx.get_help())
        else:
            message = " ".join(exc.format_message().split())
            typer.echo(f"error: {message} (see '{ctx.command_path if ctx else 'ltkit'} --help')", err=True)
        code = 2
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        code = 130
    sys.exit(code or 0)
