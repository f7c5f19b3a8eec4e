"""What a stage reads and where it writes: input paths, and output paths that can destroy nothing.

An input is a file path, or ``-`` for exactly one path on stdin. An output is checked before
any work is done: it may not name one of the stage's inputs (after ``~``, relative parts and
links), an existing file is kept unless ``--force`` is given, and ``--force`` replaces only an
earlier output of the same stage (an artifact of the same kind), never a user's file or a
folder (STYLE habit 12; docs/reliability.md, "Outputs never destroy an input").
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from ltkit.errors import ArtifactError, ConfigError, StaleOutput


def resolve_input(path: str | os.PathLike) -> Path:
    """A stage's input path; ``-`` reads it from stdin, which must hold exactly one path."""
    text = str(path)
    if text == "-":
        lines = [line.strip() for line in sys.stdin.read().splitlines() if line.strip()]
        if not lines:
            raise ConfigError("input '-' means read a path from stdin, but stdin was empty; "
                              "pipe the previous stage's output in, or give the path")
        if len(lines) > 1:
            raise ConfigError(f"input '-' reads one path from stdin, but stdin held {len(lines)} lines "
                              f"({_clip(lines[0])}, ...); pipe one stage's output, or give the path")
        text = lines[0]
    resolved = Path(text).expanduser()
    check_name(resolved)
    if resolved.is_dir():
        raise ArtifactError(f"{resolved} is a folder; give the path of an artifact file")
    if not resolved.exists():
        raise ArtifactError(f"{resolved} does not exist; give the path of an existing artifact")
    if not resolved.is_file():
        raise ArtifactError(f"{resolved} is not a regular file; give the path of an artifact file")
    return resolved


def _clip(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# The longest suffix ltkit adds to an output's name while writing it (extract's resume record).
WRITE_SUFFIX = ".partial.json.tmp"


def check_name(path: Path, reserve: int = 0) -> None:
    """Refuse a path with a component longer than the file system allows (255 bytes on most),
    less ``reserve`` bytes for the last one (room for the suffixes added while writing)."""
    try:
        limit = os.pathconf(path.parent if path.parent.is_dir() else ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    for i, part in enumerate(path.parts):
        room = limit - (reserve if i == len(path.parts) - 1 else 0)
        if len(os.fsencode(part)) > room:
            written = f" (ltkit adds up to {reserve} while writing it)" if reserve and room < limit else ""
            raise ConfigError(f"the name {_clip(part, 40)!r} is {len(os.fsencode(part))} bytes long; "
                              f"file names may be at most {room} bytes here{written}: choose a shorter path")


def partial_path(final: str | os.PathLike) -> Path:
    final = Path(final)
    return final.with_name(final.name + ".partial")


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name one file: after ~, relative parts and symbolic links
    (and hard links, when both exist)."""
    a, b = Path(a).expanduser(), Path(b).expanduser()
    if a.resolve() == b.resolve():
        return True
    with contextlib.suppress(OSError):
        return os.path.samefile(a, b)
    return False


def check_output(path: str | os.PathLike, force: bool, *, inputs: Iterable[str | os.PathLike | None] = (),
                 replaces: Callable[[Path], bool] | None = None, kind: str = "artifact") -> Path:
    """The output path of a stage, checked so that nothing a user owns is destroyed; its
    folder is made.

    - An output that is one of the stage's ``inputs`` (after symbolic links and relative
      parts) is refused, ``force`` or not.
    - An existing file is refused without ``force``; with ``force`` it is replaced only when
      ``replaces(path)`` says it is an earlier output of this same stage (an artifact of this
      ``kind``). A folder is never replaced.
    """
    path = Path(path).expanduser()
    check_not_input(path, inputs)
    if path.is_dir():
        raise ArtifactError(f"{path} is a folder; give the path of the {kind} file to write (--out)")
    if path.exists() or path.is_symlink():
        if not force:
            raise ArtifactError(f"{path} already exists; choose another --out or pass --force to replace it")
        if replaces is not None and not replaces(path):
            raise ArtifactError(f"{path} exists and is not an earlier {kind} made by ltkit; --force only "
                                f"replaces one: choose another --out, or move the file away")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ArtifactError(f"{path.parent} is a file, not a folder; choose another --out") from None
    return path


def check_not_input(path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None]) -> None:
    """Refuse an output path that names one of the stage's inputs (``--force`` or not)."""
    path = Path(path).expanduser()
    check_name(path, reserve=len(WRITE_SUFFIX))
    for source in inputs:
        if source is not None and same_path(path, source):
            same = "" if str(source) == str(path) else f" {source}"
            raise ArtifactError(f"{path} is this stage's input{same}; writing there would destroy it: "
                                "choose another --out")


def distinct_outputs(**outputs: str | os.PathLike | None) -> None:
    """Refuse two outputs of one stage that name the same file (``--out x --csv x``)."""
    given = [(name, path) for name, path in outputs.items() if path is not None]
    for i, (name, path) in enumerate(given):
        for other, other_path in given[i + 1:]:
            if same_path(path, other_path):
                raise ConfigError(f"--{name} and --{other} are the same file ({path}); give them "
                                  f"different paths")


def torch_format(path: str | os.PathLike) -> str | None:
    """The ``format`` of an ltkit torch artifact at ``path`` (e.g. "ltkit-classifier"), or None
    for any other file. Reads only the zip header and the small values (tensors mapped)."""
    import torch

    try:
        with open(path, "rb") as fh:
            if fh.read(4) != b"PK\x03\x04":  # torch.save's zip container
                return None
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # anything torch cannot read is not an ltkit artifact
        return None
    value = obj.get("format") if isinstance(obj, dict) else None
    return value if isinstance(value, str) else None


def earlier_artifact(expected_format: str) -> Callable[[Path], bool]:
    """``check_output``'s ``replaces`` for torch artifacts of ``expected_format``."""
    return lambda path: torch_format(path) == expected_format


def reuse_existing(path: str | os.PathLike, force: bool,
                   differs: Callable[[Path], str | None]) -> bool:
    """True when ``path`` already holds this very artifact (same options), so a rerun can skip.

    ``differs(path)`` says how the existing artifact differs from the one asked for, as the
    end of "PATH already exists and ..." (e.g. "was made with other options (seed)"), or None
    when it is the same. An existing file made otherwise is never overwritten without
    ``force``: that raises, with the reason.
    """
    path = Path(path).expanduser()
    if force or not path.exists():
        return False
    try:
        reason = differs(path)
    except ArtifactError as exc:
        reason = f"is not an ltkit artifact of this kind ({exc})"
    if reason is not None:
        raise StaleOutput(f"{path} already exists and {reason}; choose another --out or pass "
                            "--force to replace it")
    return True
