"""Feature-store benchmark: what caching costs and how fast the cache reads.

(a) `extract` wall time against the backbone's forward passes alone over the same images
    (same loader, batch size, device and precision; target <= 1.15x);
(b) reading `/train/features` in sample order, block by block, against reading the same
    bytes from a numpy memmap (throughput ratio; target >= 0.5x);
(c) store bytes per image (uncompressed and lzf).

Synthetic data and a randomly initialised backbone, so it runs anywhere in a minute or two:
    python benchmarks/bench_store.py [--device cuda] [--train-per-class 400]
`run(...)` returns the numbers as a dict (for `make bench` and docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ltkit import console
from ltkit.artifacts import make_lineage, save_torch_artifact, versions
from ltkit.checkpoint import FORMAT, FORMAT_VERSION, load_backbone
from ltkit.data import DatasetSpec, build_splits
from ltkit.device import resolve_device
from ltkit.extract import ExtractConfig, autocast, extract, resolve_precision
from ltkit.models import create_model
from ltkit.store import StoreLayout, StoreWriter, create_store, open_store, pack_store


def _checkpoint(path: Path, spec: DatasetSpec, arch: str) -> Path:
    splits = build_splits(spec, train_augment=False)
    model = create_model(arch, spec.num_classes, splits.in_channels)
    return save_torch_artifact({
        "format": FORMAT, "format_version": FORMAT_VERSION, "model_state": model.state_dict(),
        "arch": arch, "head": "linear", "num_classes": spec.num_classes, "in_channels": splits.in_channels,
        "class_names": splits.class_names, "class_counts": list(splits.train_counts),
        "dataset": dataclasses.asdict(spec), "config": {}, "lineage": make_lineage({}, {}, 0),
        "versions": versions(), "metrics": {}}, path)


@torch.no_grad()
def _forward_only(ckpt: Path, spec: DatasetSpec, batch_size: int, device: torch.device, precision: str) -> float:
    """Seconds to run the backbone alone over every split's images: the same set-up extract
    does (load the backbone, build the data set), then the forward passes, nothing written.
    The ratio extract / this is what extraction costs beyond running the backbone."""
    start = time.perf_counter()
    model, _ = load_backbone(ckpt, device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    splits = build_splits(spec, train_augment=False)
    for dataset in (splits.train, splits.val, splits.test):
        for images, _ in DataLoader(dataset, batch_size=batch_size, pin_memory=device.type == "cuda"):
            x = images.to(device, non_blocking=True)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                logits = model.forward_head(model.forward_features(x))  # (B, K)
            logits.float().cpu()  # wait for the device, as extract does
    return time.perf_counter() - start


def bench_extract(work: Path, *, train_per_class: int, image_size: int, arch: str, batch_size: int,
                  device: str, repeats: int) -> dict:
    spec = DatasetSpec("synthetic", num_classes=10, n_max=train_per_class + 20, imbalance=10,
                       val_per_class=20, test_per_class=100, image_size=image_size)
    ckpt = _checkpoint(work / "backbone.pt", spec, arch)
    dev = resolve_device(device)
    precision = resolve_precision("auto", dev)
    forwards, runs = [], []
    for _ in range(repeats):  # interleaved, so a busy machine slows both alike
        forwards.append(_forward_only(ckpt, spec, batch_size, dev, precision))
        cfg = ExtractConfig(batch_size=batch_size, device=device)
        start = time.perf_counter()
        out = extract(ckpt, cfg, out=work / "features.h5", force=True)
        runs.append(time.perf_counter() - start)
    forward = min(forwards)
    with open_store(out) as st:
        images = sum(st.rows(s) for s in st.splits)
    packed = work / "features-lzf.h5"
    pack_store(out, packed, "lzf")
    return {"images": images, "arch": arch, "image_size": image_size, "device": str(dev),
            "precision": precision, "forward_seconds": forward, "extract_seconds": min(runs),
            "extract_vs_forward": min(runs) / forward,
            "store_bytes_per_image": out.stat().st_size / images,
            "store_bytes_per_image_lzf": packed.stat().st_size / images}


def bench_read(work: Path, *, rows: int, channels: int, side: int, block: int, repeats: int) -> dict:
    """Sequential block reads of /train/features: the store against a memmap of the same bytes."""
    rng = np.random.default_rng(0)
    maps = np.maximum(rng.normal(size=(rows, channels, side, side)), 0).astype(np.float16)  # (N, C, H, W)
    labels = np.zeros(rows, np.int64)
    path = work / "read.h5"
    attrs = {"class_names": ["a"], "train_counts": [rows], "num_classes": 1, "feature_shape": [channels, side, side],
             "arch": "bench", "layer": "forward_features", "head": "linear", "dataset": {"name": "synthetic"},
             "backbone_path": "-", "backbone_sha256": "-", "ltkit_version": "-", "options": {}, "seed": 0,
             "lineage": {}, "train_views": 0, "spatial_splits": ["train"]}
    create_store(path, StoreLayout(channels, side, side, 1, {"train": rows, "test": 1}),
                 attrs=attrs, classifier={"kind": "linear", "weight": np.zeros((1, channels)), "bias": np.zeros(1)},
                 columns={"train": {"labels": labels}, "test": {"labels": labels[:1]}})
    with StoreWriter(path) as writer:
        for start in range(0, rows, 4096):
            writer.write("train", start, features=maps[start:start + 4096])
        writer.mark_complete()
    raw = work / "read.raw"
    maps.tofile(raw)
    del maps

    def read_store() -> float:
        with open_store(path) as st:
            for _ in st.iter_chunks("train", "features", rows=block):  # warm: offsets, mapping
                pass
            start = time.perf_counter()
            for _, chunk in st.iter_chunks("train", "features", rows=block):
                pass
            return time.perf_counter() - start

    def read_memmap() -> float:
        mm = np.memmap(raw, dtype=np.float16, mode="r", shape=(rows, channels, side, side))
        for first in range(0, rows, block):
            np.array(mm[first:first + block])
        start = time.perf_counter()
        for first in range(0, rows, block):
            chunk = np.array(mm[first:first + block])  # noqa: F841  (same lifetime as the store's)
        return time.perf_counter() - start

    store_s = min(read_store() for _ in range(repeats))
    memmap_s = min(read_memmap() for _ in range(repeats))
    nbytes = rows * channels * side * side * 2
    return {"read_rows": rows, "read_mib": nbytes / 2**20, "store_read_gib_s": nbytes / store_s / 2**30,
            "memmap_read_gib_s": nbytes / memmap_s / 2**30, "read_vs_memmap": memmap_s / store_s}


def run(*, train_per_class: int = 200, image_size: int = 16, arch: str = "resnet32", batch_size: int = 256,
        device: str = "cpu", read_rows: int = 20000, read_channels: int = 64, read_side: int = 8,
        block: int = 1024, repeats: int = 3, workdir: str | None = None) -> dict:
    """All three measurements; ratios with their targets."""
    console.configure(quiet=True)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        work = Path(tmp)
        result = bench_extract(work, train_per_class=train_per_class, image_size=image_size, arch=arch,
                               batch_size=batch_size, device=device, repeats=repeats)
        result |= bench_read(work, rows=read_rows, channels=read_channels, side=read_side, block=block,
                             repeats=repeats)
    result["targets"] = {"extract_vs_forward": "<= 1.15", "read_vs_memmap": ">= 0.5"}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", default="resnet32")
    parser.add_argument("--train-per-class", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--read-rows", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    result = run(train_per_class=args.train_per_class, image_size=args.image_size, arch=args.arch,
                 batch_size=args.batch_size, device=args.device, read_rows=args.read_rows,
                 repeats=args.repeats)
    print(f"(a) extract {result['extract_seconds']:.2f} s vs forward passes alone "
          f"{result['forward_seconds']:.2f} s over {result['images']} images: "
          f"{result['extract_vs_forward']:.2f}x (target <= 1.15)", file=sys.stderr)
    print(f"(b) reading /train/features in order: {result['store_read_gib_s']:.2f} GiB/s vs memmap "
          f"{result['memmap_read_gib_s']:.2f} GiB/s: {result['read_vs_memmap']:.2f}x (target >= 0.5)", file=sys.stderr)
    print(f"(c) {result['store_bytes_per_image']:.0f} bytes per image "
          f"({result['store_bytes_per_image_lzf']:.0f} with lzf)", file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
