"""Stores larger than memory: peak resident memory and throughput of the Phase-II stages.

Builds a synthetic feature store of at least ``--gib`` GiB of spatial maps (ResNet-50's shape,
2048 x 7 x 7 float16, ~196 KiB per image: 4 GiB is ~21,400 images), written in chunks with
bounded memory, and a small store of the same shapes that fits in memory. Then, each in its
own process so that the peak resident memory (VmHWM) is that stage's alone:

(a) FSA fine-tuning on the big store with a small resident budget (`load_bank(...,
    resident_bytes=...)` keeps the maps out of memory: in a mapped scratch copy, location-major,
    whose pages are released as it goes, `MappedSpatial`);
(b) FSA fine-tuning on the small store with every map resident (the in-memory path);
(c) `evaluate` and `confusing-classes` (they read pooled features and logits only) on the
    big store.

Targets: peak RSS of (a) below 1.5 GB; its iterations/s at least half of (b)'s, measured side
by side in one process (`child_side_by_side`: the two fine-tunes' rounds alternate, so a busy
machine slows both alike; (a) and (b) alone give each one's peak RSS).

    python benchmarks/bench_bigstore.py [--gib 4] [--iterations 200] [--keep]

The stores go under ``runs/bench/`` (git-ignored; ``--workdir`` to change) and are deleted
afterwards unless ``--keep``. `run(...)` returns the figures as a dict (for `make bench`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GIB = 2**30
RSS_TARGET_BYTES = 1.5e9  # (a)'s peak resident memory must stay below this
RATIO_TARGET = 0.5  # (a)'s iterations/s over (b)'s: "within 2x"
ROOT = Path(__file__).resolve().parents[1]


# ---- building a synthetic store ----------------------------------------------------------
def class_counts(rows: int, num_classes: int, imbalance: float) -> np.ndarray:
    """(K,) an exponential long-tailed profile (n_max / n_min = imbalance) summing to ``rows``."""
    if rows < num_classes:
        raise ValueError(f"{rows} images cannot hold {num_classes} classes")
    profile = imbalance ** (-np.arange(num_classes) / max(num_classes - 1, 1))  # (K,) 1 .. 1/IF
    counts = 1 + np.floor(profile / profile.sum() * (rows - num_classes)).astype(np.int64)  # >= 1 each
    counts[0] += rows - counts.sum()  # the rounding remainder goes to the largest class
    return counts


def build_store(path: Path, *, rows: int, channels: int, side: int, num_classes: int,
                test_rows: int, chunk_rows: int = 256, pool: int = 64, seed: int = 0) -> Path:
    """Write a finished store of ``rows`` training images; memory stays near one chunk.

    Maps come from a pool of ``pool`` random non-negative maps (some all-zero location
    vectors), drawn per row: cheap to write, and every read still touches its own bytes.
    Pooled features are the maps' means, logits the Phase-I classifier's output on them,
    CAMs random min-max normalised maps (their values do not change what is read or how much).
    """
    from ltkit import __version__
    from ltkit.store import StoreLayout, StoreWriter, create_store

    rng = np.random.default_rng(seed)
    L = side * side
    maps = np.maximum(rng.normal(-0.3, 1.0, (pool, channels, L)), 0)  # (P, C, L)
    maps *= rng.random((pool, 1, L)) >= 0.05  # some all-zero location vectors
    maps = maps.reshape(pool, channels, side, side).astype(np.float16)  # (P, C, H, W)
    pooled = maps.astype(np.float32).mean((2, 3))  # (P, C)
    raw = rng.random((pool, L))  # (P, L)
    cams = ((raw - raw.min(1, keepdims=True)) / np.ptp(raw, 1, keepdims=True)).reshape(
        pool, side, side).astype(np.float16)  # (P, H, W) in [0, 1]
    weight = rng.normal(0, 0.05, (num_classes, channels)).astype(np.float32)  # (K, C)
    bias = np.zeros(num_classes, np.float32)  # (K,)

    counts = class_counts(rows, num_classes, imbalance=100.0)
    labels = {"train": np.repeat(np.arange(num_classes), counts),
              "test": np.arange(test_rows) % num_classes}
    attrs = {"class_names": [f"class{k}" for k in range(num_classes)], "train_counts": counts.tolist(),
             "num_classes": num_classes, "feature_shape": [channels, side, side], "arch": "bench",
             "layer": "forward_features", "head": "linear", "dataset": {"name": "synthetic"},
             "backbone_path": "-", "backbone_sha256": "-", "ltkit_version": __version__,
             "options": {"benchmark": "bigstore"}, "seed": seed, "lineage": {}, "train_views": 0,
             "spatial_splits": ["train"]}
    create_store(path, StoreLayout(channels, side, side, num_classes, {s: len(v) for s, v in labels.items()}),
                 attrs=attrs, classifier={"kind": "linear", "weight": weight, "bias": bias},
                 columns={s: {"labels": v.astype(np.int64)} for s, v in labels.items()})
    with StoreWriter(path) as writer:
        for split, lab in labels.items():
            for start in range(0, len(lab), chunk_rows):  # a loop over chunks of rows
                pick = rng.integers(0, pool, min(chunk_rows, len(lab) - start))  # (b,)
                arrays = {"pooled": pooled[pick], "logits": pooled[pick] @ weight.T + bias}  # (b, C), (b, K)
                if split == "train":
                    arrays |= {"features": maps[pick], "cams": cams[pick]}  # (b, C, H, W), (b, H, W)
                writer.write(split, start, **arrays)
        writer.mark_complete()
    return path


def check_disk(workdir: Path, need_bytes: float, min_free_gib: float) -> None:
    """RuntimeError when ``workdir``'s file system has less than max(min_free_gib, 2 x need) free."""
    free = shutil.disk_usage(workdir).free
    need = max(min_free_gib * GIB, 2 * need_bytes)
    if free < need:
        raise RuntimeError(f"bench_bigstore: {workdir} has {free / GIB:.1f} GiB free and needs "
                           f"{need / GIB:.1f} GiB; free some space or give --workdir on a larger disk")


# ---- one measurement per process ---------------------------------------------------------
def peak_rss() -> dict:
    """This process's peak and current resident memory, in bytes (Linux: /proc/self/status)."""
    fields = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                fields[key] = int(value.split()[0]) * 1024  # kB -> bytes
    except OSError:
        pass
    if "VmHWM" not in fields:  # elsewhere: ru_maxrss (kB on Linux, bytes on macOS)
        scale = 1 if sys.platform == "darwin" else 1024
        fields["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    return {"peak_rss_bytes": fields["VmHWM"], "rss_bytes": fields.get("VmRSS"),
            "rss_anon_bytes": fields.get("RssAnon"), "rss_file_bytes": fields.get("RssFile")}


def child_finetune(store: str, table: str, resident_bytes: float, iterations: int, rounds: int) -> dict:
    """Load a bank as `augment-finetune` does, then time FSA fine-tuning (best of ``rounds``)."""
    import torch

    from ltkit import console
    from ltkit.augment import AUTO_FIXED
    from ltkit.augment.bank import load_bank
    from ltkit.classifiers import Classifier
    from ltkit.confusing import load_table
    from ltkit.finetune import FinetuneConfig, finetune_classifier
    from ltkit.store import open_store

    console.configure(quiet=True)
    base = peak_rss()["rss_bytes"]
    device = torch.device("cpu")
    with open_store(store) as st:
        tab = load_table(table)
        start = time.perf_counter()
        bank = load_bank(st, tab, device=device, spatial=True, resident_bytes=resident_bytes)
        load_s = time.perf_counter() - start
        phase1 = Classifier.from_store(st)
        cfg = FinetuneConfig.from_options(dict(AUTO_FIXED, augment="fsa", classifier="linear",
                                               iterations=iterations, device="cpu")
                                          ).resolved(st.rows("train"), int(tab["top"]))
        finetune_classifier(bank, phase1, dataclasses.replace(cfg, iterations=5))  # warm-up
        rates = []
        for r in range(rounds):  # best of a few rounds: robust to a busy machine
            start = time.perf_counter()
            finetune_classifier(bank, phase1, dataclasses.replace(cfg, seed=r))
            rates.append(iterations / (time.perf_counter() - start))
        spatial = type(bank.spatial).__name__  # TensorSpatial: every map held in memory
    return {"load_seconds": load_s, "it_per_s": max(rates), "it_per_s_rounds": rates,
            "spatial": spatial, "rss_after_imports_bytes": base, **peak_rss()}


def child_side_by_side(big: str, big_table: str, small: str, small_table: str, resident_bytes: float,
                       iterations: int, rounds: int) -> dict:
    """Throughput of the streamed and the in-memory fine-tune side by side in one process:
    their rounds alternate, so a busy machine slows both alike; the best round of each."""
    import torch

    from ltkit import console
    from ltkit.augment import AUTO_FIXED
    from ltkit.augment.bank import load_bank
    from ltkit.classifiers import Classifier
    from ltkit.confusing import load_table
    from ltkit.finetune import FinetuneConfig, finetune_classifier
    from ltkit.store import open_store

    console.configure(quiet=True)
    with open_store(big) as sb, open_store(small) as ss:
        runs = {}
        for name, st, tab, budget in (("streamed", sb, big_table, resident_bytes),
                                      ("in_memory", ss, small_table, 64 * GIB)):
            tab = load_table(tab)
            bank = load_bank(st, tab, device=torch.device("cpu"), spatial=True, resident_bytes=budget)
            cfg = FinetuneConfig.from_options(dict(AUTO_FIXED, augment="fsa", classifier="linear",
                                                   iterations=iterations, device="cpu")
                                          ).resolved(st.rows("train"), int(tab["top"]))
            phase1 = Classifier.from_store(st)
            finetune_classifier(bank, phase1, dataclasses.replace(cfg, iterations=5))  # warm-up
            runs[name] = (bank, phase1, cfg)
        rates = {name: [] for name in runs}
        for r in range(rounds):
            for name, (bank, phase1, cfg) in runs.items():
                start = time.perf_counter()
                finetune_classifier(bank, phase1, dataclasses.replace(cfg, seed=r))
                rates[name].append(iterations / (time.perf_counter() - start))
    best = {name: max(v) for name, v in rates.items()}
    return {"it_per_s": best, "rounds": rates, "ratio": best["streamed"] / best["in_memory"]}


def child_evaluate(store: str) -> dict:
    from ltkit import console
    from ltkit.evaluate import EvalConfig, evaluate

    console.configure(quiet=True)
    start = time.perf_counter()
    result = evaluate(store, EvalConfig(on="test", device="cpu")).result
    return {"seconds": time.perf_counter() - start, "top1": result.get("top1"), **peak_rss()}


def write_table(store: str | Path, out: str | Path) -> None:
    """`confusing-classes` on ``store`` with the default options, in this process."""
    from ltkit import console
    from ltkit.confusing import ConfusingConfig, build_table

    console.configure(quiet=True)
    build_table(store, ConfusingConfig(), out=out, force=True)


def child_confusing(store: str, table: str) -> dict:
    start = time.perf_counter()
    write_table(store, table)
    return {"seconds": time.perf_counter() - start, **peak_rss()}


CHILDREN = {"finetune": child_finetune, "side_by_side": child_side_by_side, "evaluate": child_evaluate,
            "confusing": child_confusing}


def in_child(kind: str, **kwargs) -> dict:
    """Run one measurement in a fresh Python process; its JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, json.dumps(kwargs)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"bench_bigstore: the {kind} measurement failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- the benchmark -------------------------------------------------------------------------
def run(*, gib: float = 4.0, rows: int | None = None, small_rows: int = 2000, channels: int = 2048,
        side: int = 7, num_classes: int = 100, test_rows: int = 5000, iterations: int = 200,
        rounds: int = 3, resident_mib: float = 256, workdir: str | None = None, keep: bool = False,
        min_free_gib: float = 10.0) -> dict:
    """Build both stores, measure (a), (b), (c); the figures with their targets.

    The big store holds ``rows`` training images, or (None) enough for ``gib`` GiB of maps;
    ``min_free_gib``: refuse to start with less free disk than this (or twice the stores).
    """
    row_bytes = channels * side * side * 2  # one float16 map
    rows = rows or int(np.ceil(gib * GIB / row_bytes))
    if resident_mib * 2**20 >= rows * row_bytes:  # banks hold maps as float16, as stored
        raise ValueError(f"bench_bigstore: a resident budget of {resident_mib} MiB would hold the big "
                         f"store's maps in memory; give a smaller resident_mib or a bigger store")
    base = Path(workdir) if workdir else ROOT / "runs" / "bench"
    base.mkdir(parents=True, exist_ok=True)
    check_disk(base, rows * row_bytes + small_rows * row_bytes, min_free_gib)
    work = Path(tempfile.mkdtemp(prefix="bigstore-", dir=base))
    try:
        big, small = work / "big.h5", work / "small.h5"
        shapes = dict(channels=channels, side=side, num_classes=num_classes, test_rows=test_rows)
        start = time.perf_counter()
        build_store(big, rows=rows, **shapes)
        write_s = time.perf_counter() - start
        build_store(small, rows=small_rows, **shapes)
        confusing = in_child("confusing", store=str(big), table=str(work / "big.table.pt"))
        write_table(small, work / "small.table.pt")  # not measured: here, saving a process start
        evaluate = in_child("evaluate", store=str(big))
        ft = dict(iterations=iterations, rounds=rounds)
        streamed = in_child("finetune", store=str(big), table=str(work / "big.table.pt"),
                            resident_bytes=resident_mib * 2**20, **ft)
        memory = in_child("finetune", store=str(small), table=str(work / "small.table.pt"),
                          resident_bytes=64 * GIB, **ft)
        side = in_child("side_by_side", big=str(big), big_table=str(work / "big.table.pt"), small=str(small),
                        small_table=str(work / "small.table.pt"), resident_bytes=resident_mib * 2**20,
                        iterations=iterations, rounds=2 * rounds)
        store_bytes = big.stat().st_size
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    ratio = side["ratio"]
    return {"big_rows": rows, "small_rows": small_rows, "feature_map": [channels, side, side],
            "big_maps_gib": rows * row_bytes / GIB, "big_store_gib": store_bytes / GIB,
            "write_seconds": write_s, "write_gib_s": store_bytes / GIB / write_s,
            "resident_budget_mib": resident_mib, "iterations": iterations, "rounds": rounds,
            "streamed": streamed, "in_memory": memory, "side_by_side": side,
            "evaluate": evaluate, "confusing": confusing,
            "finetune_peak_rss_bytes": streamed["peak_rss_bytes"],
            "streamed_vs_in_memory": ratio,
            "streamed_spatial": streamed["spatial"],
            "kept": str(work) if keep else None,
            "evaluate_peak_rss_bytes": evaluate["peak_rss_bytes"],
            "confusing_peak_rss_bytes": confusing["peak_rss_bytes"],
            "targets": {"finetune_peak_rss_bytes": f"< {RSS_TARGET_BYTES:.3g}",
                        "streamed_vs_in_memory": f">= {RATIO_TARGET}",
                        "evaluate_peak_rss_bytes": f"< {RSS_TARGET_BYTES:.3g}",
                        "confusing_peak_rss_bytes": f"< {RSS_TARGET_BYTES:.3g}"},
            "pass": {"finetune_peak_rss_bytes": streamed["peak_rss_bytes"] < RSS_TARGET_BYTES,
                     "streamed_vs_in_memory": ratio >= RATIO_TARGET,
                     "evaluate_peak_rss_bytes": evaluate["peak_rss_bytes"] < RSS_TARGET_BYTES,
                     "confusing_peak_rss_bytes": confusing["peak_rss_bytes"] < RSS_TARGET_BYTES}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=4.0, help="GiB of spatial maps in the big store")
    parser.add_argument("--small-rows", type=int, default=2000, help="images in the in-memory store")
    parser.add_argument("--iterations", type=int, default=200, help="fine-tuning iterations per round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per fine-tune (best kept)")
    parser.add_argument("--resident-mib", type=float, default=256, help="resident budget of the streamed run")
    parser.add_argument("--workdir", default=None, help="where the stores go (default runs/bench)")
    parser.add_argument("--keep", action="store_true", help="keep the stores afterwards")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # one measurement, as a child process of run()
        kind, kwargs = args.child
        print(json.dumps(CHILDREN[kind](**json.loads(kwargs))))
        return 0
    result = run(gib=args.gib, small_rows=args.small_rows, iterations=args.iterations,
                 rounds=args.rounds, resident_mib=args.resident_mib, workdir=args.workdir, keep=args.keep)
    s, m = result["streamed"], result["in_memory"]
    print(f"store: {result['big_rows']} images, {result['big_store_gib']:.2f} GiB, written at "
          f"{result['write_gib_s']:.2f} GiB/s", file=sys.stderr)
    print(f"(a) streamed fine-tune: peak RSS {s['peak_rss_bytes'] / 1e9:.2f} GB (target < 1.5), "
          f"{s['it_per_s']:.1f} it/s", file=sys.stderr)
    side = result["side_by_side"]["it_per_s"]
    print(f"(b) in-memory fine-tune ({result['small_rows']} images): peak RSS "
          f"{m['peak_rss_bytes'] / 1e9:.2f} GB, {m['it_per_s']:.1f} it/s", file=sys.stderr)
    print(f"side by side: streamed {side['streamed']:.1f} it/s, in-memory {side['in_memory']:.1f} it/s: "
          f"{result['streamed_vs_in_memory']:.2f} (target >= 0.5)", file=sys.stderr)
    for name in ("evaluate", "confusing"):
        print(f"(c) {name}: peak RSS {result[name]['peak_rss_bytes'] / 1e9:.2f} GB, "
              f"{result[name]['seconds']:.1f} s", file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
