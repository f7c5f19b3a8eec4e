"""Artifact plumbing shared by every stage: input paths, atomic outputs, hashes, lineage.

Every artifact is written as ``NAME.partial`` and renamed into place only when complete, so a
crash never leaves a half-written file at the final path. Torch artifacts (checkpoints,
classifiers, tables) are plain dicts of tensors and Python values, loaded with
``weights_only=True`` only: a file that needs code to unpickle is refused.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ltkit import __version__
from ltkit.errors import ArtifactError, ConfigError


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
        raise ArtifactError(f"{path} already exists and {reason}; choose another --out or pass "
                            "--force to replace it")
    return True


def option_diff(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The keys on which two option dicts differ, sorted."""
    return sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))


def other_options(diff: list[str]) -> str | None:
    """``reuse_existing``'s reason for differing options, or None when there are none."""
    return f"was made with other options ({', '.join(diff)})" if diff else None


def commit_partial(partial: Path, final: Path) -> None:
    """Make a finished ``partial`` durable and rename it to ``final`` in one step."""
    with open(partial, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(partial, final)
    with contextlib.suppress(OSError):  # make the rename itself durable where the OS allows
        dir_fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# errno values that mean "the file system refused the write" (the user can fix it), and the
# same failures as torch's and HDF5's writers report them (they give no OSError).
WRITE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "file too large",
                errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
                errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                errno.EIO: "input/output error"}
_TEXT_ERRNO = re.compile(r"errno = (\d+)|\[Errno (\d+)\]")
_WRITER_FAILURES = ("inline_container", "PytorchStreamWriter", "file write failed",
                    "unable to extend file", "can't write data", "unable to flush",
                    "write failed")


def write_failure(exc: BaseException) -> str | None:
    """What went wrong when ``exc`` is the file system refusing a write (disk full, size limit,
    quota, permissions), else None. torch and HDF5 raise RuntimeError / OSError texts of their
    own for these; the errno they quote, or their "write failed" wording, gives them away."""
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
        return WRITE_ERRNOS[exc.errno]
    if not isinstance(exc, (OSError, RuntimeError)):
        return None
    text = str(exc)
    for match in _TEXT_ERRNO.finditer(text):
        code = int(match.group(1) or match.group(2))
        if code in WRITE_ERRNOS:
            return WRITE_ERRNOS[code]
    if any(marker.lower() in text.lower() for marker in _WRITER_FAILURES):
        return "the write failed (disk full or a file size limit?)"
    return None


def write_error(exc: BaseException, path: str | os.PathLike) -> ArtifactError:
    """The one-line error for a write of ``path`` the file system refused (see `write_failure`)."""
    reason = write_failure(exc)
    if reason is None or reason.startswith("the write failed"):
        reason = _likely_cause(Path(path)) or reason or "the write failed"
    return ArtifactError(f"could not write {path}: {reason}; free space (or fix the folder's "
                         f"permissions or size limit) or choose another --out, then rerun")


def _likely_cause(path: Path) -> str | None:
    """Why a write without an errno (torch's writer) failed: a file size limit, or a full disk."""
    import shutil

    with contextlib.suppress(OSError, ValueError, ImportError):  # no `resource` on Windows
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
        if soft != resource.RLIM_INFINITY:
            return f"file too large (this process may write at most {soft} bytes per file: ulimit -f)"
    with contextlib.suppress(OSError):
        if shutil.disk_usage(path.parent).free < (1 << 20):
            return WRITE_ERRNOS[errno.ENOSPC]
    return None


@contextlib.contextmanager
def atomic_output(final: str | os.PathLike, suffix: str = ".partial") -> Iterator[Path]:
    """Yield ``final + suffix`` to write; on success rename it to ``final``, on error remove it.

    A write the file system refuses (disk full, file size limit, quota, permissions) becomes an
    `ArtifactError` naming ``final``; nothing at ``final`` is touched either way.
    """
    final = Path(final)
    partial = final.with_name(final.name + suffix)
    try:
        yield partial
        commit_partial(partial, final)
    except BaseException as exc:  # writing, or the rename: the partial goes, `final` is untouched
        with contextlib.suppress(OSError):
            partial.unlink()
        if write_failure(exc) is not None:
            raise write_error(exc, final) from None
        raise


_SHA256_CACHE: dict[tuple, str] = {}


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """The file's SHA-256, hex. Remembered for the process, keyed by the file's identity and
    its size and change times, so a stage that checks a 20 GB store's lineage several times
    reads it once; a later write changes the key. Only a file unchanged for a few seconds is
    remembered: file-system timestamps are coarse (a few ms), and two writes within one tick
    would share a key."""
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if key in _SHA256_CACHE:
            return _SHA256_CACHE[key]
        digest = hashlib.sha256()
        while block := fh.read(chunk):
            digest.update(block)
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > 2_000_000_000:
        _SHA256_CACHE[key] = digest.hexdigest()
    return digest.hexdigest()


def versions() -> dict[str, str]:
    import numpy
    import torch

    return {"ltkit": __version__, "torch": str(torch.__version__), "numpy": str(numpy.__version__),
            "python": platform.python_version()}


def make_lineage(parents: dict[str, str | os.PathLike], options: dict[str, Any],
                 seed: int | None) -> dict[str, Any]:
    """What made an artifact: parent paths + content hashes, options, seed, versions, time."""
    return {
        "parents": {role: {"path": str(Path(p).resolve()), "sha256": file_sha256(p)}
                    for role, p in parents.items()},
        "options": options,
        "seed": seed,
        "versions": versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def save_torch_artifact(obj: dict[str, Any], final: str | os.PathLike) -> Path:
    """Write a dict of tensors / plain values atomically with torch.save."""
    import torch

    final = Path(final)
    with atomic_output(final) as partial:
        torch.save(obj, partial)
    return final


def load_torch_artifact(path: str | os.PathLike, expected_format: str) -> dict[str, Any]:
    """Load a torch artifact written by ltkit; refuse anything that needs code to unpickle."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist or is not a file; give the path of an "
                            f"{expected_format} artifact")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = re.search(r"GLOBAL (\S+)", str(exc))
        if unsafe:  # the pickle names a callable: loading it would run code; never done
            raise ArtifactError(f"{path} holds pickled objects that would run code when loaded "
                                f"({unsafe.group(1)}); ltkit only loads plain tensors and values "
                                f"and refuses this file: use an artifact ltkit wrote") from None
        raise ArtifactError(f"{path} is not a readable ltkit artifact (damaged, or not a file "
                            f"ltkit wrote); give the output of the right ltkit stage") from None
    except Exception as exc:  # torch raises many kinds on a file that is not its own
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:120] or type(exc).__name__
        raise ArtifactError(f"{path} is not a readable ltkit artifact (truncated, damaged or "
                            f"not a torch file: {first}); give the output of the right ltkit "
                            f"stage") from None
    if not isinstance(obj, dict) or obj.get("format") != expected_format:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise ArtifactError(f"{path} is not an {expected_format} artifact (found {found!r}); "
                            f"give the output of the right ltkit stage")
    return obj
