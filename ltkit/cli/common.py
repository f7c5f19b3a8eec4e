"""Options shared by the commands, and the one boundary that turns errors into exit codes.

Exit codes: 0 done; 2 bad input or usage (one line, no traceback unless --debug);
1 an internal error; 130 interrupted (Ctrl-C), 143 terminated (SIGTERM): both keep what a
resumable stage had written. A result that cannot be written to stdout (full, closed, a broken
pipe) is said on stderr with the artifact's path, exit 2. A write the file system refuses (disk full, a file size
limit, a quota, permissions) is the user's to fix: exit 2 too. Messages are printed as plain
text (paths and class names may hold rich markup characters such as ``[/]``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ltkit.cli.helpstyle import OUTPUT, RUN, completer
from ltkit.errors import ConfigError, LtkitError

# Options every stage shares; all in the "Run" section of --help. The modules they need
# (rich, torch through ltkit.artifacts) are imported where they are used: --help imports none.
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors on stderr; no progress.",
                                     rich_help_panel=RUN)]
Debug = Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.", rich_help_panel=RUN)]
Force = Annotated[bool, typer.Option("--force", help="Replace an existing output artifact.", rich_help_panel=RUN)]
MAX_SEED = 2**63 - 1  # torch generators take 64 bits; numpy's are seeded from it modulo 2**32
MAX_WORKERS = 64  # data-loading processes: more only waits on the disk and the memory
Seed = Annotated[int, typer.Option("--seed", min=0, max=MAX_SEED, help="Random seed (0 to 2^63-1); the same seed "
                                                                       "repeats a run exactly.", rich_help_panel=RUN)]
Device = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.",
                                     autocompletion=completer(("auto", "cpu", "cuda")), rich_help_panel=RUN)]
Workers = Annotated[int, typer.Option("--workers", min=0, max=MAX_WORKERS, help="Data-loading worker processes (0: "
                                                                                "load in the main process; at most "
                                                                                "64).", rich_help_panel=RUN)]
TensorBoard = Annotated[str | None, typer.Option(
    "--tensorboard", metavar="DIR", help="Also write the run log as TensorBoard event files into DIR (pip install "
                                         "'ltkit[tensorboard]'); the CSV log beside the output is written either way.",
    rich_help_panel=RUN)]
Out = Annotated[Path | None, typer.Option("--out", "-o", help="Path of the artifact to write.", rich_help_panel=RUN)]
# One machine-readable output for the stages that give a result (evaluate, inspect, compare,
# confusing-classes): --json, the result as one JSON object on stdout.
Json = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object on stdout.",
                                    rich_help_panel=OUTPUT)]
TAU_HELP = ("the tau-normalisation exponent (W_k / ||W_k||^tau, bias dropped): a number >= 0, or auto (chosen on the "
            "validation split by balanced accuracy, 0..2 step 0.1). Not given, in every stage: a tau-norm classifier "
            "takes auto, any other classifier is left as it is.")


def parse_tau(text: str | None) -> float | str | None:
    """--tau, the same in every stage: None (not given), "auto", or an exponent >= 0."""
    if text is None or text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--tau takes a number >= 0 (e.g. 1.0) or auto, got {text!r}") from None
    if not (value >= 0 and value != float("inf")):
        raise ConfigError(f"--tau takes a number >= 0 (e.g. 1.0) or auto, got {text!r}")
    return value


def _rank() -> int:
    """This process's rank under torchrun (0 otherwise): only rank 0 speaks."""
    import os

    return int(os.environ.get("RANK", "0"))


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line. An error raised in a DataLoader worker comes back
    as "Caught X in DataLoader worker ... Original Traceback ... X: message": its last line,
    the original message, is what the user needs."""
    text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Original Traceback" in text and lines:
        last = lines[-1]
        name = type(exc).__name__
        for prefix in (f"{type(exc).__module__}.{name}: ", f"{name}: "):
            last = last.removeprefix(prefix)
        return last
    return " ".join(lines)


def _say(markup: str, message: str) -> None:
    """One line on stderr: a styled label, then the message as plain text (never markup)."""
    from rich.markup import escape

    from ltkit import console

    console.console.print(f"{markup} {escape(message)}", soft_wrap=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the stage is, so it ends as an interrupt does (partials kept)."""


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises `Terminated` in the main thread while a stage runs."""
    def handler(signum, frame):
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (a library caller's worker): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_stage(fn: Callable[[], Any], *, quiet: bool = False, debug: bool = False) -> Any:
    """Run a stage's library call under the error boundary; return its result."""
    from ltkit import console
    from ltkit.artifacts import write_failure

    console.configure(quiet=quiet or _rank() != 0)
    try:
        with _sigterm_as_interrupt():
            return fn()
    except Terminated:
        _say("[red]terminated:[/red]", "no half-written artifact is left at the output; rerun the "
             "same command to resume (a stage that cannot resume starts over)")
        raise typer.Exit(143) from None
    except LtkitError as exc:
        if debug:
            traceback.print_exc(file=sys.stderr)
        _say("[red]error:[/red]", one_line(exc))
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        _say("[red]interrupted:[/red]", "no half-written artifact is left at the output; rerun "
             "the same command to resume (a stage that cannot resume starts over)")
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as exc:  # an internal error: one line, traceback with --debug
        if debug:
            traceback.print_exc(file=sys.stderr)
        reason = write_failure(exc)
        if reason is not None:  # disk full, size limit, permissions: the user's to fix
            where = getattr(exc, "filename", None) or "a file ltkit was writing"
            _say("[red]error:[/red]", f"{where}: {reason}; free disk space (or fix the folder's "
                 "permissions or size limit), then rerun the same command")
            raise typer.Exit(2) from None
        _say("[red]internal error:[/red]", f"{type(exc).__name__}: {one_line(exc)[:300]} "
             "(rerun with --debug for the traceback)")
        raise typer.Exit(1) from None


def emit_path(path: Path) -> None:
    """The one line a stage prints on stdout: the artifact it wrote (rank 0 alone)."""
    if _rank() == 0:
        _emit(str(path), f"the artifact is {path}")


def emit_json(obj: Any, where: str = "") -> None:
    """A JSON result on stdout; ``where`` says where a copy of it is, should stdout fail."""
    _emit(json.dumps(obj, indent=2, sort_keys=False, allow_nan=False),
          where or "rerun with stdout going to a file")


def _emit(text: str, where: str) -> None:
    """``text`` and a newline on stdout, flushed. A stdout that is closed, full or a broken pipe
    is said in one line on stderr (with ``where``), exit 2, never a traceback."""
    stream = sys.stdout
    try:
        if stream is None:
            raise OSError(errno.EBADF, "closed")
        stream.write(text + "\n")
        stream.flush()
    except (OSError, ValueError) as exc:  # ValueError: a closed Python stream
        reason = {errno.EPIPE: "the reading end of the pipe was closed", errno.ENOSPC: "the device is full",
                  errno.EBADF: "stdout is closed"}.get(getattr(exc, "errno", None), "it failed")
        _mute_stdout()
        _say("[red]error:[/red]", f"could not write the result to stdout ({reason}); {where}")
        raise typer.Exit(2) from None


def _mute_stdout() -> None:
    """Point stdout at /dev/null so that Python's exit flush cannot fail a second time."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def parse_int_list(text: str | None, what: str) -> list[int] | None:
    """``"4000,2000,..."`` -> [4000, 2000, ...]; a bad list is a usage error naming ``what``."""
    if text is None or text == "":
        return None
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers, got {text!r}") from None
