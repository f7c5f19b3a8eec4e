"""How a stage runs, as opposed to what it computes.

`RunOptions` holds the options that never change an artifact's numbers: where it runs, with
how many workers and threads, how often it reports, where it keeps scratch files. A stage's
config nests one (``cfg.run``); reruns and resumes compare every option *except* these, and
`compare` leaves them out of its option columns. A stage ignores the fields it has no use for.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ltkit.errors import ConfigError


@dataclass
class RunOptions:
    device: str = "auto"            # auto (CUDA when present) | cpu | cuda | cuda:N
    workers: int = 0                # data-loading worker processes (0: load in the main process)
    threads: int = 0                # CPU intra-op threads (0: torch's default)
    eval_every: int = 0             # validation report every N epochs / iterations (0: only at the end)
    resident_gib: float = 4.0       # feature maps up to this size live in memory / on the device, else streamed
    scratch_dir: str | None = None  # streamed maps: folder of their mapped scratch copy (None: beside the store)
    tensorboard: str | None = None  # folder for TensorBoard event files of the run's log (None: the CSV log only)

    def validate(self) -> None:
        for name in ("workers", "threads", "eval_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be a whole number >= 0, got {value!r}")
        if not self.resident_gib >= 0:
            raise ConfigError(f"--resident-gib must be >= 0, got {self.resident_gib!r}")
        if self.tensorboard is not None:
            from ltkit.runlog import check_tensorboard

            check_tensorboard(self.tensorboard)


RUN_FIELDS = frozenset(f.name for f in dataclasses.fields(RunOptions))


def result_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` (an artifact's saved config, nested or flat) without how-it-ran options."""
    return {k: v for k, v in options.items() if k != "run" and k not in RUN_FIELDS}
