"""`make bench`: run every benchmark, print a summary and write docs/benchmarks.md.

    python benchmarks/run_all.py [--quick] [--skip-bigstore] [--device cpu|cuda] [--out PATH]

Figures (ratios are the claims; absolute times depend on the machine and are informational):
- extraction vs forward-only time, store read vs memmap throughput, store bytes per image
  (`bench_store.py`);
- FSA vectorised vs a literal Algorithm 1, fine-tuning iterations/s (`bench_fsa.py`);
- a spatial head fine-tuned from the cache vs one Phase-I epoch, as a ratio (`bench_spatial.py`);
- a store larger than memory: peak resident memory of fine-tune / evaluate / confusing-classes,
  streamed vs in-memory fine-tuning throughput (`bench_bigstore.py`; CPU only, ~4 GiB of disk);
- `ltkit --help` / `--version` against `python -c "import torch"`, side by side (`bench_cli.py`).
- `ltkit sweep` end to end, 3 seeds, on the real Fashion-MNIST-LT IF 100 store
  (`bench_sweep.py`; LTKIT_SWEEP_STORE or runs/if100-ce/features.h5).

``--quick`` runs every benchmark on tiny sizes (seconds: a smoke run, its figures mean
nothing). The page records the machine it ran on and says so when the machine was busy.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # the sibling benchmark modules
BUSY_LOAD = 1.5  # load average above which the page warns that timings are noisy

# Keyword arguments of each benchmark's run(); FULL: their defaults.
FULL: dict[str, dict[str, Any]] = {"store": {}, "fsa": {}, "bigstore": {}, "cli": {}, "sweep": {}, "spatial": {}}
QUICK: dict[str, dict[str, Any]] = {
    "store": {"train_per_class": 10, "image_size": 8, "batch_size": 64, "read_rows": 256,
              "read_channels": 8, "read_side": 4, "block": 64, "repeats": 1},
    "fsa": {"images": 300, "channels": 8, "side": 4, "batch_sizes": (128, 512), "batches": 2,
            "literal_batches": 1, "iterations": 5},
    "spatial": {"images": 200, "image_side": 16, "channels": 8, "side": 4, "phase1_batch": 16,
                "phase1_batches": 1, "iterations": 3},
    "bigstore": {"rows": 300, "small_rows": 200, "channels": 16, "side": 4, "num_classes": 10,
                 "test_rows": 100, "iterations": 3, "rounds": 1, "resident_mib": 0.1,
                 "min_free_gib": 0.0},
    "cli": {"repeats": 1},
    "sweep": {"store": None, "seeds": 2, "iterations": 20},
}


@dataclass(frozen=True)
class Figure:
    label: str                 # the row's name on the page
    bench: str                 # store | fsa | bigstore | sweep | spatial: the benchmark that measures it
    key: str                   # where in that benchmark's result, dots for nesting
    unit: str                  # x (a ratio), GB, B, it/s, s, GiB/s, ms
    target: tuple[str, float] | None = None  # (<, <=, >=) bound: the claim; None: informational


CLAIMS = (
    Figure("extract time / forward passes alone", "store", "extract_vs_forward", "x", ("<=", 1.15)),
    Figure("store read / memmap read throughput", "store", "read_vs_memmap", "x", (">=", 0.5)),
    Figure("FSA speed-up over literal Algorithm 1, batch 128", "fsa", "batches.128.speedup", "x"),
    Figure("FSA speed-up over literal Algorithm 1, batch 512", "fsa", "batches.512.speedup", "x"),
    Figure("fine-tuning, FSA batches", "fsa", "finetune_it_per_s_fsa", "it/s"),
    Figure("fine-tuning, no-augmentation batches", "fsa", "finetune_it_per_s_none", "it/s"),
    Figure("spatial head fine-tune from the cache / one Phase-I epoch", "spatial", "finetune_vs_epoch", "x",
           ("<=", 0.1)),
    Figure("the same, one separable block of 128 (--head-block separable --head-depth 1)", "spatial",
           "separable_vs_epoch", "x"),
    Figure("store size per image", "store", "store_bytes_per_image", "B"),
    Figure("store size per image, lzf", "store", "store_bytes_per_image_lzf", "B"),
    Figure("big store: fine-tune peak RSS (streamed)", "bigstore", "finetune_peak_rss_bytes", "GB",
           ("<", 1.5e9)),
    Figure("big store: fine-tune it/s, streamed / in-memory", "bigstore", "streamed_vs_in_memory", "x",
           (">=", 0.5)),
    Figure("big store: evaluate peak RSS", "bigstore", "evaluate_peak_rss_bytes", "GB", ("<", 1.5e9)),
    Figure("big store: confusing-classes peak RSS", "bigstore", "confusing_peak_rss_bytes", "GB",
           ("<", 1.5e9)),
    Figure("ltkit --help / python -c 'import torch'", "cli", "help_vs_torch", "x", ("<=", 0.25)),
    Figure("ltkit train-backbone --help / import torch", "cli", "stage_help_vs_torch", "x", ("<=", 0.25)),
    Figure("ltkit --version / import torch", "cli", "version_vs_torch", "x", ("<=", 0.25)),
    Figure("ltkit sweep, 3 seeds, Fashion-MNIST-LT IF 100 (CPU)", "sweep", "seconds", "s", ("<=", 300.0)),
)
ABSOLUTE = (
    Figure("extract, wall time", "store", "extract_seconds", "s"),
    Figure("forward passes alone, wall time", "store", "forward_seconds", "s"),
    Figure("store read throughput", "store", "store_read_gib_s", "GiB/s"),
    Figure("memmap read throughput", "store", "memmap_read_gib_s", "GiB/s"),
    Figure("FSA batch of 128, vectorised", "fsa", "batches.128.ms_vectorised", "ms"),
    Figure("FSA batch of 128, literal", "fsa", "batches.128.ms_literal", "ms"),
    Figure("FSA batch of 512, vectorised", "fsa", "batches.512.ms_vectorised", "ms"),
    Figure("FSA batch of 512, literal", "fsa", "batches.512.ms_literal", "ms"),
    Figure("big store: size", "bigstore", "big_store_gib", "GiB"),
    Figure("big store: write throughput", "bigstore", "write_gib_s", "GiB/s"),
    Figure("big store: streamed fine-tune (side by side)", "bigstore", "side_by_side.it_per_s.streamed", "it/s"),
    Figure("big store: in-memory fine-tune, small store (side by side)", "bigstore",
           "side_by_side.it_per_s.in_memory", "it/s"),
    Figure("big store: streamed fine-tune (alone)", "bigstore", "streamed.it_per_s", "it/s"),
    Figure("big store: in-memory fine-tune (alone)", "bigstore", "in_memory.it_per_s", "it/s"),
    Figure("big store: in-memory fine-tune peak RSS", "bigstore", "in_memory.peak_rss_bytes", "GB"),
    Figure("python + torch + ltkit imported, RSS", "bigstore", "streamed.rss_after_imports_bytes", "GB"),
    Figure("big store: bank load, streamed", "bigstore", "streamed.load_seconds", "s"),
    Figure("ltkit --help, wall time (median)", "cli", "seconds.help", "s"),
    Figure("python -c 'import torch', wall time (median)", "cli", "seconds.import_torch", "s"),
)
OPS: dict[str, Callable[[float, float], bool]] = {"<": float.__lt__, "<=": float.__le__, ">=": float.__ge__}


def lookup(result: dict, key: str) -> Any:
    """``result["a"]["b"]`` for key "a.b" (dict keys may be ints, as FSA batch sizes are)."""
    value: Any = result
    for part in key.split("."):
        value = value.get(part, value.get(int(part)) if part.isdigit() else None)
        if value is None:
            return None
    return value


def show(value: float, unit: str) -> str:
    if unit == "GB":
        return f"{value / 1e9:.2f} GB"
    if unit == "B":
        return f"{value:,.0f} B"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:.3g} {unit}" if abs(value) < 100 else f"{value:,.0f} {unit}"


def bound(fig: Figure) -> str:
    if fig.target is None:
        return "-"
    op, limit = fig.target
    return f"{op} {show(limit, fig.unit)}"


def judge(fig: Figure, results: dict[str, Any]) -> tuple[str, str]:
    """(value shown, result: pass | FAIL | info | skipped | error) of one figure."""
    outcome = results.get(fig.bench)
    if outcome is None:
        return "-", "skipped"
    if isinstance(outcome, str):
        return "-", "error"
    value = lookup(outcome, fig.key)
    if value is None:
        return "-", "missing"
    if fig.target is None:
        return show(value, fig.unit), "info"
    op, limit = fig.target
    return show(value, fig.unit), "pass" if OPS[op](float(value), float(limit)) else "FAIL"


def machine(device: str) -> dict[str, str]:
    """What the figures were measured on."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        mem = "unknown"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    from ltkit import __version__

    return {"CPU": f"{cpu}, {os.cpu_count()} logical cores", "memory": mem, "GPU": gpu,
            "benchmark device": device, "torch": str(torch.__version__),
            "python": platform.python_version(), "ltkit": __version__,
            "OS": f"{platform.system()} {platform.release()}",
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def run_benchmarks(*, quick: bool, skip_bigstore: bool, device: str, workdir: str | None,
                   log: Callable[[str], None]) -> dict[str, Any]:
    """Each benchmark's result dict, or the error it raised (a string); absent when skipped."""
    import bench_bigstore
    import bench_cli
    import bench_fsa
    import bench_spatial
    import bench_store
    import bench_sweep

    sizes = QUICK if quick else FULL
    if workdir:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    jobs = {"store": lambda: bench_store.run(device=device, workdir=workdir, **sizes["store"]),
            "fsa": lambda: bench_fsa.run(device=device, **sizes["fsa"]),
            "spatial": lambda: bench_spatial.run(device=device, **sizes["spatial"]),
            "bigstore": lambda: bench_bigstore.run(workdir=workdir, **sizes["bigstore"]),
            "cli": lambda: bench_cli.run(**sizes["cli"]),
            "sweep": lambda: bench_sweep.run(workdir=workdir, **sizes["sweep"])}
    if skip_bigstore:
        del jobs["bigstore"]
    results: dict[str, Any] = {}
    for name, job in jobs.items():  # one after the other: they would slow each other down
        log(f"running bench_{name} ...")
        start = time.perf_counter()
        try:
            results[name] = job()
            log(f"bench_{name}: {time.perf_counter() - start:.0f} s")
        except Exception as exc:  # a failed benchmark is reported on the page, the others still run
            log(traceback.format_exc())
            results[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return results


def markdown(results: dict[str, Any], info: dict[str, str], *, quick: bool, loads: list[float],
             settings: dict[str, dict[str, Any]], command: str = "benchmarks/run_all.py") -> str:
    lines = ["# Benchmarks", "",
             "Written by `make bench` (`benchmarks/run_all.py`); run it again to refresh this page. "
             "Ratios are the claims: absolute times depend on the machine and are informational "
             "(on a GPU they are GPU figures).", ""]
    if quick:
        lines += ["**Quick smoke run (`--quick`): tiny sizes, the figures mean nothing.**", ""]
    busy = max(loads) > BUSY_LOAD
    lines += ["## Machine", "", "| | |", "| --- | --- |"]
    lines += [f"| {key} | {value} |" for key, value in info.items()]
    load_note = " (shared and busy: timings are noisy)" if busy else ""
    lines += [f"| load average (1 min) | {loads[0]:.2f} at start, {loads[-1]:.2f} at end{load_note} |", ""]
    if busy:
        lines += [f"The machine was shared with other work while this ran (load average above "
                  f"{BUSY_LOAD}): every timing is noisier and the ratios less certain than on an "
                  "idle machine. Each benchmark takes the best of repeated rounds to limit this.", ""]
    lines += ["## Figures and targets", "", "| figure | value | target | result |",
              "| --- | --- | --- | --- |"]
    for fig in CLAIMS:
        value, verdict = judge(fig, results)
        lines.append(f"| {fig.label} | {value} | {bound(fig)} | {verdict} |")
    lines += ["", "`info`: no target is set for this figure; it is reported for comparison.", "",
              "## Absolute figures (informational)", "", "| figure | value |", "| --- | --- |"]
    for fig in ABSOLUTE:
        lines.append(f"| {fig.label} | {judge(fig, results)[0]} |")
    errors = {name: outcome for name, outcome in results.items() if isinstance(outcome, str)}
    skipped = [name for name in FULL if name not in results]
    lines += ["", "## How it was run", "", f"`{command}`", ""]
    for name in FULL:
        state = ("skipped" if name in skipped else f"failed: `{errors[name]}`" if name in errors
                 else "ran")
        args = ", ".join(f"{k}={v}" for k, v in settings[name].items()) or "defaults"
        lines.append(f"- `benchmarks/bench_{name}.py` ({args}): {state}")
    lines += ["", "Each benchmark runs on its own too (`python benchmarks/bench_store.py`, "
              "`bench_fsa.py`, `bench_bigstore.py`, `bench_cli.py`, `bench_sweep.py`) and prints its full "
              "result as JSON.", ""]
    return "\n".join(lines)


def summary(results: dict[str, Any]) -> str:
    rows = [(fig.label, *judge(fig, results), bound(fig)) for fig in CLAIMS]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{label:<{width}}  {value:>12}  {verdict:<7} {target}"
                     for label, value, verdict, target in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run in seconds")
    parser.add_argument("--skip-bigstore", action="store_true", help="leave out the 4 GiB store benchmark")
    parser.add_argument("--device", default="cpu", help="device of bench_store and bench_fsa (cpu, cuda)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"), help="the page to write")
    parser.add_argument("--json", default=None, help="also write every result as JSON here")
    parser.add_argument("--workdir", default=None, help="scratch folder for the stores (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads in this process (default: torch's; 1 with --quick)")
    args = parser.parse_args(argv)
    import torch

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    from ltkit import console

    console.configure(quiet=True)
    threads = args.threads or (1 if args.quick else 0)
    if threads:  # on a busy machine, more threads than free cores mostly wait on each other
        torch.set_num_threads(threads)
    loads = [os.getloadavg()[0]]
    info = machine(args.device) | {"torch CPU threads": str(torch.get_num_threads())}
    results = run_benchmarks(quick=args.quick, skip_bigstore=args.skip_bigstore, device=args.device,
                             workdir=args.workdir, log=log)
    loads.append(os.getloadavg()[0])
    settings = QUICK if args.quick else FULL
    command = " ".join(["benchmarks/run_all.py", *(argv if argv is not None else sys.argv[1:])])
    page = markdown(results, info, quick=args.quick, loads=loads, settings=settings, command=command)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "load_average": loads,
                                               "results": results}, indent=2, default=str))
    print(summary(results))
    print(f"written: {out}")
    return 1 if any(isinstance(v, str) for v in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
