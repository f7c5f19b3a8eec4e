"""The stderr console. stdout carries only results; everything a human reads goes here.

Progress is a rich bar on a terminal and plain periodic lines otherwise (or with --quiet,
which keeps only warnings and errors).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True, highlight=False)
_quiet = False


def configure(*, quiet: bool = False) -> None:
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


@contextlib.contextmanager
def quietly() -> Iterator[None]:
    """Only warnings and errors inside (a stage run within another's progress bar), then as before."""
    global _quiet
    before, _quiet = _quiet, True
    try:
        yield
    finally:
        _quiet = before


def log(message: str) -> None:
    """A line on stderr; the text is printed as it is (no rich markup: paths may hold '[')."""
    if not _quiet:
        console.print(escape(message), soft_wrap=True)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True)


class _Tracker:
    """What a long loop reports to: ``advance(n, **fields)`` with fields shown beside the bar."""

    def __init__(self, total: int, description: str, unit: str, bar: Progress | None):
        self.total, self.description, self.unit, self.bar = total, description, unit, bar
        self.done, self.start = 0, time.perf_counter()
        self.fields: dict[str, str] = {}
        self._task = bar.add_task(description, total=total, info="") if bar else None
        self._next_line = 0.0

    def advance(self, n: int = 1, **fields: object) -> None:
        self.done += n
        self.fields.update({k: (f"{v:.4g}" if isinstance(v, float) else str(v))
                            for k, v in fields.items()})
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        info = " ".join(f"{k} {v}" for k, v in self.fields.items())
        info = f"{info} {rate:.1f} {self.unit}/s".strip()
        if self.bar is not None:
            self.bar.update(self._task, advance=n, info=info)
        elif not _quiet:
            now = time.perf_counter()
            if now >= self._next_line or self.done >= self.total:
                eta = (self.total - self.done) / rate if rate > 0 else float("inf")
                console.print(f"{self.description}: {self.done}/{self.total} {info} "
                              f"eta {eta:.0f}s", soft_wrap=True)
                self._next_line = now + 10.0  # a plain line at most every 10 s


@contextlib.contextmanager
def progress(total: int, description: str, unit: str = "it") -> Iterator[_Tracker]:
    """A progress tracker on stderr: a bar on a terminal, plain lines elsewhere."""
    if _quiet or not console.is_terminal:
        yield _Tracker(total, description, unit, None)
        return
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=console, transient=False)
    with bar:
        yield _Tracker(total, description, unit, bar)
