"""Artifact plumbing shared by every stage: atomic outputs, write failures, hashes, lineage
(input and output paths: `ltkit.outputs`).

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
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ltkit import __version__
from ltkit.errors import ArtifactError
from ltkit.outputs import (  # noqa: F401  (the stages import these from here too)
    WRITE_SUFFIX,
    check_name,
    check_not_input,
    check_output,
    distinct_outputs,
    earlier_artifact,
    partial_path,
    resolve_input,
    reuse_existing,
    same_path,
    torch_format,
)


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
