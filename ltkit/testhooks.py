"""A pause point for tests that signal a running stage (SIGINT, SIGKILL) at a known moment.

On a shared, busy machine a test that waits a while and then signals a stage may find the
stage already finished. Instead the test starts the stage with

    LTKIT_TEST_PAUSE_AT=POINT:N  LTKIT_TEST_PAUSE_MARKER=FILE

and the stage, on reaching ``pause_at(POINT, count)`` with ``count >= N``, writes FILE and
sleeps until it is signalled, or until FILE is removed (then it carries on and does not
pause again; so it does after `MAX_PAUSE_S`). The test waits for FILE, then sends its
signal, or does what it wants done while the stage is paused and removes FILE. Without the
variable `pause_at` only reads the environment.

Points: ``epoch-end`` (train-backbone: the resume state after epoch N is on disk),
``extract-rows`` (extract: at least N rows recorded in the partial), ``iteration``
(augment-finetune: iteration N done).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

PAUSE_AT = "LTKIT_TEST_PAUSE_AT"
PAUSE_MARKER = "LTKIT_TEST_PAUSE_MARKER"
MAX_PAUSE_S = 600.0  # a test that never signals does not leave the stage asleep for ever


def pause_at(point: str, count: int | Callable[[], int]) -> None:
    """Pause here when the environment asks for `point` and `count` has reached its N.

    `count` may be a callable, evaluated only when `point` is the one asked for (for counts
    that cost something to know, such as rows a writer thread has yet to record)."""
    wanted = os.environ.get(PAUSE_AT)
    if not wanted:
        return
    name, _, at = wanted.partition(":")
    if name != point:
        return
    reached = count() if callable(count) else count
    if reached < int(at or 0):
        return
    del os.environ[PAUSE_AT]  # one pause per process: once it carries on, it runs to the end
    marker = Path(os.environ.get(PAUSE_MARKER) or f"ltkit-paused-{os.getpid()}")
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(f"{point} {reached} {os.getpid()}\n")
    os.replace(tmp, marker)  # the test sees the marker whole or not at all
    deadline = time.monotonic() + MAX_PAUSE_S
    while marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # a signal ends the sleep (Ctrl-C raises KeyboardInterrupt here)
