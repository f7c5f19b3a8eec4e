"""h5py's failures as one-line StoreErrors that say what to do."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from pathlib import Path

import h5py

from ltkit.artifacts import write_failure
from ltkit.errors import StoreError

H5_ERRORS = (OSError, KeyError, RuntimeError)  # what h5py raises on a damaged file
LOCK_ERRNOS = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES)  # flock held by another process


def first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:160]


def open_for_reading(path: Path) -> h5py.File:
    """``h5py.File(path, "r")``; a lock held by a writer, or a damaged file, as a StoreError."""
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        text = str(exc)
        if "unable to lock file" in text and (exc.errno in LOCK_ERRNOS or "temporarily unavailable" in text):
            raise StoreError(f"{path} is locked by another process writing it ({first_line(exc)}); wait "
                             f"for that process to finish, or, if none is (a file system whose locks "
                             f"misbehave), set HDF5_USE_FILE_LOCKING=FALSE") from None
        if "unable to lock file" in text:  # locking not supported here (NFS, some mounts)
            raise StoreError(f"{path} cannot be locked on this file system ({first_line(exc)}); set "
                             f"HDF5_USE_FILE_LOCKING=FALSE in the environment of the processes "
                             f"reading it") from None
        raise StoreError(f"{path} cannot be opened as HDF5 ({first_line(exc)}); it is truncated or "
                         f"damaged: run ltkit extract again") from None


@contextlib.contextmanager
def damage_is_store_error(path: Path) -> Iterator[None]:
    """h5py's errors on a damaged file (a bad header, heap or B-tree) as one-line StoreErrors."""
    try:
        yield
    except StoreError:
        raise
    except H5_ERRORS as exc:
        raise StoreError(f"{path} cannot be read ({first_line(exc)}); it is damaged or "
                         f"truncated: re-extract it") from None


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """A write the file system refuses (disk full, size limit) as a one-line StoreError."""
    try:
        yield
    except StoreError:
        raise
    except (OSError, RuntimeError) as exc:
        reason = write_failure(exc)
        if reason is None:
            raise
        raise StoreError(f"could not write {path}: {reason}; free space (or raise the size "
                         f"limit) or choose another --out, then rerun") from None
