"""How fast the command line answers: ``ltkit --help`` against ``python -c "import torch"``.

    python benchmarks/bench_cli.py [--repeats 7]

Each repetition starts fresh interpreters side by side, one after the other: ``ltkit --help``,
``ltkit train-backbone --help`` (the longest), ``ltkit --version`` and ``import torch``; the
figures are the medians (a busy machine slows single runs, not the middle one). The claim is
that help and version import no torch, so they take a fraction of torch's import time.
`run(...)` returns the figures; the script prints them as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "help": ["-m", "ltkit", "--help"],
    "stage_help": ["-m", "ltkit", "train-backbone", "--help"],
    "version": ["-m", "ltkit", "--version"],
    "import_torch": ["-c", "import torch"],
}


def _seconds(args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL, env=env, cwd=ROOT)
    return time.perf_counter() - start


def run(repeats: int = 7) -> dict:
    """Median wall seconds of each command over ``repeats`` side-by-side rounds, and the ratios."""
    _seconds(COMMANDS["import_torch"])  # warm the file cache once: every command then reads warm files
    _seconds(COMMANDS["help"])
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(repeats):
        for name, args in COMMANDS.items():
            times[name].append(_seconds(args))
    median = {name: statistics.median(values) for name, values in times.items()}
    torch_s = median["import_torch"]
    return {"repeats": repeats, "seconds": median,
            "help_vs_torch": median["help"] / torch_s,
            "stage_help_vs_torch": median["stage_help"] / torch_s,
            "version_vs_torch": median["version"] / torch_s}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    print(json.dumps(run(parser.parse_args().repeats), indent=2))
