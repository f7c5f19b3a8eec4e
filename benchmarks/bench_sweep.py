"""Time `ltkit sweep` end to end: every Phase-II method, 3 seeds, into a fresh folder (nothing reused).

    python benchmarks/bench_sweep.py [--store runs/fm/features.h5] [--seeds 3]

The default store is the real Fashion-MNIST-LT IF 100 one (10-epoch CE backbone) where it
exists (``LTKIT_SWEEP_STORE`` or ``runs/if100-ce/features.h5``); ``--quick`` (run_all) times a
tiny synthetic store instead (tests/storefixtures.py), a smoke run whose figure means nothing.
Reported: wall seconds of the sweep (table included), the load average around it, the methods
and runs, the chosen method.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STORE = os.environ.get("LTKIT_SWEEP_STORE", str(ROOT / "runs" / "if100-ce" / "features.h5"))


def run(*, store: str | None = DEFAULT_STORE, seeds: int = 3, iterations: int | None = None,
        device: str = "cpu", workdir: str | None = None) -> dict:
    """``store`` None: a tiny synthetic store (smoke run)."""
    from ltkit import console
    from ltkit.sweep import SweepConfig, sweep

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        if store is None:
            sys.path.insert(0, str(ROOT / "tests"))
            from storefixtures import make_store

            store = str(make_store(Path(tmp) / "features.h5"))
        if not Path(store).is_file():
            raise FileNotFoundError(f"no store at {store}: give --store (or LTKIT_SWEEP_STORE)")
        out = Path(tmp) / "sweep"
        loads = [os.getloadavg()[0]]
        start = time.perf_counter()
        with console.quietly():
            chosen = sweep(store, SweepConfig(seeds=seeds, iterations=iterations, device=device), out=out)
        seconds = time.perf_counter() - start
        loads.append(os.getloadavg()[0])
        summary = json.loads((out / "sweep.json").read_text())
    return {"store": store, "seeds": seeds, "seconds": seconds, "load_average": loads,
            "methods": len(summary["methods"]) - 1, "runs": sum(m["runs"] for m in summary["methods"]),
            "chosen": summary["chosen"]["method"], "chosen_file": Path(chosen).name,
            "per_method_seconds": {m["method"]: round(m["seconds"], 1) for m in summary["methods"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=DEFAULT_STORE)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    print(json.dumps(run(store=args.store, seeds=args.seeds), indent=1))


if __name__ == "__main__":
    main()
