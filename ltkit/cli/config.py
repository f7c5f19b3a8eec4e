"""``--config FILE.toml`` and ``--print-config`` for every stage.

A config file holds one table per stage, named like the command, whose keys are the long
option names without their dashes; options given on the command line win over the file::

    [train-backbone]
    data = "fashion-mnist-lt"
    imbalance = 100
    batch-size = 128

    [augment-finetune]
    augment = "fsa"

One file can hold a whole run: each stage reads its own table. ``--print-config`` prints the
stage's resolved options (file, command line and defaults together) as such a table and
exits without running, so a run can be written down and replayed exactly. Both work through
click's ``default_map``, before the stage's options are parsed.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from ltkit.errors import ConfigError

CONFIG, PRINT = "--config", "--print-config"


def split_argv(argv: list[str]) -> tuple[list[str], str | None, bool]:
    """(argv without the two options, the --config path or None, whether --print-config was given)."""
    rest, path, show = [], None, False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest += argv[i:]
            break
        if arg == PRINT:
            show = True
        elif arg == CONFIG:
            if i + 1 >= len(argv):
                raise ConfigError("--config needs a file: --config FILE.toml")
            path, i = argv[i + 1], i + 1
        elif arg.startswith(CONFIG + "="):
            path = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return rest, path, show


def _options(command) -> dict[str, Any]:
    """long option name without dashes -> the click parameter, for a stage's options."""
    names = {}
    for param in command.params:
        for opt in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]:
            if opt.startswith("--") and getattr(param, "param_type_name", "option") == "option":
                names[opt[2:]] = param
    return names


def _toml():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib


def load_defaults(path: str, stage: str, command) -> dict[str, Any]:
    """The ``[stage]`` table of ``path`` as click's default_map for the stage's command."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"--config {path}: no such file; give a TOML file with a [{stage}] table")
    try:
        data = _toml().loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise ConfigError(f"--config {path} is not valid TOML ({' '.join(str(exc).split())})") from None
    table = data.get(stage, {})
    if not isinstance(table, dict):
        raise ConfigError(f"--config {path}: [{stage}] must be a table of options, got {type(table).__name__}")
    options = _options(command)
    unknown = sorted(set(table) - set(options))
    if unknown:
        shown = ", ".join(sorted(options)[:60])
        raise ConfigError(f"--config {path}: [{stage}] has unknown option(s) {', '.join(unknown[:5])}; "
                          f"{stage} takes: {shown}")
    defaults = {}
    for key, value in table.items():
        param = options[key]
        if f"--{key}" in getattr(param, "secondary_opts", []):  # --no-amp = false -> amp = true
            value = not value
        defaults[param.name] = value
    return defaults


def _value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else "nan" if math.isnan(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        items = [_value(v) for v in value]
        return "[" + ", ".join(i for i in items if i is not None) + "]"
    return json.dumps(str(value))  # a TOML basic string: JSON's escapes are TOML's


def resolved_table(stage: str, command, params: dict[str, Any]) -> str:
    """The options of a parsed stage as a ``[stage]`` TOML table (None values left out)."""
    lines = [f"[{stage}]"]
    for name, param in _options(command).items():
        if param.name not in params or f"--{name}" not in param.opts or param.name in ("quiet", "debug", "force"):
            continue
        text = _value(params[param.name])
        if text is not None:
            lines.append(f"{name} = {text}")
    return "\n".join(lines) + "\n"
