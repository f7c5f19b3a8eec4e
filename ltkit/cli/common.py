"""Options shared by the commands, and the one boundary that turns errors into exit codes.

Exit codes: 0 done; 2 bad input or usage (one line, no traceback unless --debug);
1 an internal error; 130 interrupted.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from ltkit import console
from ltkit.errors import ConfigError, LtkitError

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors on stderr; no progress.")]
Debug = Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")]
Force = Annotated[bool, typer.Option("--force", help="Replace an existing output artifact.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed; the same seed repeats a run exactly.")]
Device = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")]
Workers = Annotated[int, typer.Option("--workers", min=0, help="Data-loading worker processes (0: load in the main process).")]
Out = Annotated[Optional[Path], typer.Option("--out", "-o", help="Path of the artifact to write.")]


def _rank() -> int:
    """This process's rank under torchrun (0 otherwise): only rank 0 speaks."""
    import os

    return int(os.environ.get("RANK", "0"))


def run_stage(fn: Callable[[], Any], *, quiet: bool = False, debug: bool = False) -> Any:
    """Run a stage's library call under the error boundary; return its result."""
    console.configure(quiet=quiet or _rank() != 0)
    try:
        return fn()
    except LtkitError as exc:
        if debug:
            traceback.print_exc(file=sys.stderr)
        console.console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        console.console.print("[red]interrupted[/red]: what was written so far is kept; "
                              "rerun the same command to resume")
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as exc:  # an internal error: one line, traceback with --debug
        if debug:
            traceback.print_exc(file=sys.stderr)
        first = str(exc).splitlines()[0] if str(exc) else ""
        console.console.print(f"[red]internal error:[/red] {type(exc).__name__}: {first} "
                              "(rerun with --debug for the traceback)", soft_wrap=True)
        raise typer.Exit(1) from None


def emit_path(path: Path) -> None:
    """The one line a stage prints on stdout: the artifact it wrote (rank 0 alone)."""
    if _rank() == 0:
        typer.echo(str(path))


def emit_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=False, allow_nan=False))


def parse_int_list(text: Optional[str], what: str) -> Optional[list[int]]:
    """``"4000,2000,..."`` -> [4000, 2000, ...]; a bad list is a usage error naming ``what``."""
    if text is None or text == "":
        return None
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers, got {text!r}") from None
