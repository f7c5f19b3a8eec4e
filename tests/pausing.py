"""Signal a stage at a known point, never after a wall-clock guess (see ltkit.testhooks).

    env = pause_env(ENV, "epoch-end", 1, marker)   # the stage pauses after epoch 1
    proc = subprocess.Popen([...], env=env)
    wait_until_paused(proc, marker)                # it is paused there now
    proc.send_signal(signal.SIGINT)
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from ltkit.testhooks import PAUSE_AT, PAUSE_MARKER

DEADLINE_S = 300.0  # only a failing test waits this long: a paused stage waits for its signal


def interruptible() -> None:
    """``preexec_fn`` for a stage a test will Ctrl-C: SIGINT at its default, as a terminal
    starts a command. A test run started in the background by a shell without job control
    inherits SIGINT ignored, and Python then never turns SIGINT into KeyboardInterrupt."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def pause_env(env: dict[str, str], point: str, at: int, marker: Path) -> dict[str, str]:
    """`env` with the stage asked to pause at `point` once its count reaches `at`."""
    marker.unlink(missing_ok=True)
    return {**env, PAUSE_AT: f"{point}:{at}", PAUSE_MARKER: str(marker)}


def wait_until_paused(proc: subprocess.Popen, marker: Path, deadline: float = DEADLINE_S) -> None:
    """Return once the stage has written `marker`; fail if it ended (or hung) before."""
    start = time.monotonic()
    while not marker.exists():
        if proc.poll() is not None:
            err = proc.communicate()[1] or ""
            err = err.decode(errors="replace") if isinstance(err, bytes) else err
            raise AssertionError(f"the stage ended (exit {proc.returncode}) before its pause point: {err[-800:]}")
        if time.monotonic() - start > deadline:
            raise AssertionError(f"the stage did not reach its pause point in {deadline:.0f} s")
        time.sleep(0.02)
