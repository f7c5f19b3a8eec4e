"""The resumable writer behind `extract`: ``OUT.partial`` plus a record of the rows done.

The partial is created with every dataset allocated (`create_store`), so writing only fills
raw rows. After each batch the file is flushed and then the rows done per part are recorded
in ``OUT.partial.json``, written atomically: the record never names a row that is not in the
file. A rerun with the same options resumes from the record; a partial of other options is
refused (or, with force, started over); one that cannot be opened is started over. Writing
runs on a thread so the disk overlaps the caller's next batch. A lock on ``OUT.partial.lock``
keeps a second writer of the same output away.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ltkit import console
from ltkit.artifacts import option_diff, partial_path, write_failure
from ltkit.errors import ArtifactError, StoreError
from ltkit.store.reader import open_store
from ltkit.store.writer import StoreWriter


class Progress:
    """Rows done per part, in ``OUT.partial.json``, rewritten atomically after every flush."""

    def __init__(self, path: Path, options: dict[str, Any], done: dict[str, int]):
        self.path, self.options, self.done = path, options, done

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps({"options": self.options, "done": self.done}, sort_keys=True))
            os.replace(tmp, self.path)
        except OSError as exc:  # the record before this one still holds: the rows it names are in
            tmp.unlink(missing_ok=True)
            reason = write_failure(exc)
            if reason is None:
                raise
            raise StoreError(f"could not write {self.path}: {reason}; free space, then rerun the "
                             f"same command to resume from the rows already written") from None

    @staticmethod
    def load(path: Path) -> dict[str, Any] | None:
        try:
            record = json.loads(path.read_text())
            return record if isinstance(record, dict) and {"options", "done"} <= set(record) else None
        except (OSError, ValueError):
            return None


class BackgroundWriter:
    """Writes batches on a thread (the disk overlaps the next forward pass); after each
    batch: flush, then record the rows done. `close` drains what was handed over."""

    def __init__(self, writer: StoreWriter, progress: Progress, depth: int = 2):
        self.writer, self.progress = writer, progress
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            try:
                if self.error is None:
                    part, start, rows = item
                    self.writer.write(part, start, **rows)
                    self.writer.flush()  # the rows are in the file before the record says so
                    self.progress.done[part] = start + len(rows["pooled"])
                    self.progress.save()
            except BaseException as exc:  # reported to the main thread on its next call
                self.error = exc
            finally:
                self.queue.task_done()

    def put(self, part: str, start: int, rows: dict[str, np.ndarray]) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((part, start, rows))

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def wait_idle(self) -> None:
        """Block until every handed-over batch is written (the thread then holds no lock,
        so DataLoader workers can be forked safely)."""
        self.queue.join()


def open_or_create(partial: Path, record_path: Path, options: dict[str, Any], rows: dict[str, int],
                   force: bool, create: Callable[[Path], None]) -> Progress:
    """Resume a partial made with the same options (`rows`: part -> rows it must have), or
    start one with `create`; never mix two runs."""
    record = Progress.load(record_path) if partial.exists() else None
    if partial.exists() and record is None:
        console.warn(f"{partial} has no progress record (stopped while being created); starting it over")
    elif record is not None and record["options"] != options:
        diff = option_diff(record["options"], options)
        if not force:
            raise ArtifactError(f"{partial} is an interrupted extraction with other options "
                                f"({', '.join(diff)}); rerun with the same options to resume it, "
                                f"or pass --force to start over")
        console.warn(f"--force: starting over; {partial} was made with other options ({', '.join(diff)})")
    elif record is not None:
        try:
            with open_store(partial, allow_incomplete=True) as st:
                if any(st.rows(name) != n for name, n in rows.items()):
                    raise StoreError("its rows do not match the data set")
            done = {name: min(int(record["done"].get(name, 0)), n) for name, n in rows.items()}
            console.log(f"resuming {partial}: {sum(done.values())} of {sum(rows.values())} rows "
                        f"already written")
            return Progress(record_path, options, done)
        except StoreError as exc:
            console.warn(f"{partial} cannot be resumed ({exc}); starting it over")
    partial.unlink(missing_ok=True)
    record_path.unlink(missing_ok=True)
    try:
        create(partial)
        progress = Progress(record_path, options, {name: 0 for name in rows})
        progress.save()  # its existence says the partial was created completely
    except BaseException:  # nothing written yet worth keeping: give the space back
        partial.unlink(missing_ok=True)
        record_path.unlink(missing_ok=True)
        raise
    return progress


@contextlib.contextmanager
def exclusive(lock: Path, out: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock` while writing `out`: a second extract of the same
    output fails at once instead of writing the same partial."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): nothing to hold
        yield
        return
    with open(lock, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArtifactError(f"another ltkit extract is writing {out}; wait for it to finish "
                                f"or stop it first") from None
        except OSError:  # a file system without locks: go on unlocked
            pass
        yield


@contextlib.contextmanager
def resumable(out: Path, options: dict[str, Any], rows: dict[str, int], force: bool,
              create: Callable[[Path], None], check_out: Callable[[Path], object]) -> Iterator[tuple[Path, Progress]]:
    """``(OUT.partial, its progress)``, new or resumed (`open_or_create`), under the lock on
    ``OUT.partial.lock``; the caller fills, finishes and renames it. `check_out(out)` (the
    stage's output check) runs again under the lock. On a clean exit the record and the lock
    file are removed; on an error both stay, for the rerun to resume from."""
    partial, record = partial_path(out), out.with_name(out.name + ".partial.json")
    lock = out.with_name(out.name + ".partial.lock")
    with exclusive(lock, out):
        check_out(out)  # again, under the lock: another run may have just finished it
        yield partial, open_or_create(partial, record, options, rows, force, create)
        record.unlink(missing_ok=True)
    lock.unlink(missing_ok=True)
