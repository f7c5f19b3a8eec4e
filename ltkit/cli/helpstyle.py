"""How a stage's ``--help`` reads: options grouped in sections, name-valued options that list
and complete their choices, and examples at the end. Nothing here imports torch.

A new option joins a section by its ``rich_help_panel`` (one of the section names below); an
option without one is listed under "Options". A name-valued option is declared with
``choice(...)``, which writes its names into the help and completes them in the shell::

    loss: Annotated[str, choice("--loss", "Loss", choices.LOSSES, panel=LOSS)] = "ce",
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import typer
from typer.core import TyperCommand

# Section names; --help lists a stage's sections in this order (each stage uses those it needs),
# then any other section, then "Options" (the options without a section, and --help).
INPUT = "Input"
DATA = "Data"
MODEL = "Model"
LOSS = "Loss"
SAMPLER = "Sampler"
OPTIMISER = "Optimiser"
SCL = "SCL (supervised contrastive)"
RSG = "RSG (rare-class sample generator)"
METHOD = "Method"
BATCHES = "Batches (fsa, cloud, none)"
MEASURE = "Measure"
OUTPUT = "Output"
RUN = "Run"
ORDER = (INPUT, DATA, MODEL, METHOD, LOSS, SAMPLER, BATCHES, OPTIMISER, SCL, RSG, MEASURE, OUTPUT, RUN)


class SectionedCommand(TyperCommand):
    """A typer command whose plain-text help lists its options under their ``rich_help_panel``
    (typer shows panels only in rich mode; ltkit's help stays plain text, fast and greppable)."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                title = "Arguments"
            else:
                title = getattr(param, "rich_help_panel", None) or "Options"
            sections.setdefault(title, []).append(record)
        def rank(title: str) -> int:
            return ORDER.index(title) if title in ORDER else len(ORDER) + (title == "Options")

        for title in sorted(sections, key=lambda title: (title != "Arguments", rank(title))):
            records = sections[title]
            with formatter.section(title):
                formatter.write_dl(records)


def completer(names: Iterable[str]) -> Callable[[str], list[str]]:
    """Shell completion of a name-valued option: the names that start with what was typed."""
    names = tuple(names)

    def complete(incomplete: str) -> list[str]:
        return [name for name in names if name.startswith(incomplete)]

    return complete


def choice(flag: str, what: str, names: Sequence[str], *, panel: str | None = None, note: str = "",
           extra: Sequence[str] = ()) -> Any:
    """A name-valued option: its help says ``what: name1, name2, ...`` (then ``note``) and the
    shell completes the names (and ``extra``, e.g. auto)."""
    shown = ", ".join([*names, *extra])
    return typer.Option(flag, help=f"{what}: {shown}.{' ' + note if note else ''}",
                        autocompletion=completer([*names, *extra]), rich_help_panel=panel)


def examples(*lines: str) -> str:
    """A stage's epilog: its examples, one per line, kept as written (``\\b``: click does not
    rewrap the paragraph)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def stage(app: typer.Typer, name: str, *, help: str | None = None, example: Sequence[str] = ()) -> Callable:
    """``@stage(app, "name", example=[...])``: a command with sectioned help and examples."""
    return app.command(name, cls=SectionedCommand, help=help, epilog=examples(*example) if example else None)
