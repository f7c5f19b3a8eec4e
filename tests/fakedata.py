"""Tiny fake data sets in the real on-disk formats, for tests (no network, a few KB each).

Stable helpers other test files may import (all take a root folder, create it, and are
deterministic from `seed`):

- `write_cifar10(root, per_class=50, test_per_class=5)` -> ROOT/cifar-10-batches-py/
  (data_batch_1..5, test_batch, batches.meta: torchvision's pickle format, class names
  "class0".."class9"); labels interleaved in random order, like the real files.
- `write_cifar100(root, per_class=5, test_per_class=2)` -> ROOT/cifar-100-python/ (train, test, meta).
- `read_cifar_train_labels(folder)` -> the train labels as stored, read with plain pickle.
- `write_fashion_mnist(root, per_class=30, test_per_class=5, gz=True, torchvision_layout=False)`
  -> the folder holding the four IDX files (train-images-idx3-ubyte[.gz], ...).
- `write_imagefolder(root, counts, test_per_class=2, size=12, mode="RGB", splits=("train", "test"))`
  -> ROOT with ROOT/<split>/<class>/<i>.png; classes named "c0", "c1", ... (folder order = label).
- `write_list_files(root, counts, test_per_class=2, val_per_class=0, size=12, mode="RGB")`
  -> dict(train=..., test=..., val=...) paths of "relative/path.png label" list files under ROOT
  (images in ROOT/images/<class>/; no "val" key when val_per_class is 0).
- `write_png(path, size=12, mode="RGB", value=None, seed=0)` -> one small random PNG.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def _shuffled_labels(k: int, per_class: int, rng: np.random.RandomState) -> np.ndarray:
    labels = np.repeat(np.arange(k), per_class)
    rng.shuffle(labels)
    return labels


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # the real files are Python 2 pickles


def write_cifar10(root: str | Path, per_class: int = 50, test_per_class: int = 5, seed: int = 0) -> Path:
    """A fake CIFAR-10 in torchvision's layout under root; returns ROOT/cifar-10-batches-py."""
    rng = np.random.RandomState(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    labels = _shuffled_labels(10, per_class, rng)
    data = rng.randint(0, 256, size=(len(labels), 3072)).astype(np.uint8)
    for i, part in enumerate(np.array_split(np.arange(len(labels)), 5), 1):
        _dump(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5",
                                           "labels": labels[part].tolist(), "data": data[part]})
    test_labels = _shuffled_labels(10, test_per_class, rng)
    _dump(folder / "test_batch", {"labels": test_labels.tolist(),
                                  "data": rng.randint(0, 256, size=(len(test_labels), 3072)).astype(np.uint8)})
    _dump(folder / "batches.meta", {"label_names": [f"class{c}" for c in range(10)], "num_vis": 3072})
    return folder


def write_cifar100(root: str | Path, per_class: int = 5, test_per_class: int = 2, seed: int = 0) -> Path:
    """A fake CIFAR-100 in torchvision's layout under root; returns ROOT/cifar-100-python."""
    rng = np.random.RandomState(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, per in (("train", per_class), ("test", test_per_class)):
        labels = _shuffled_labels(100, per, rng)
        _dump(folder / name, {"fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist(),
                              "data": rng.randint(0, 256, size=(len(labels), 3072)).astype(np.uint8)})
    _dump(folder / "meta", {"fine_label_names": [f"fine{c}" for c in range(100)],
                            "coarse_label_names": [f"coarse{c}" for c in range(20)]})
    return folder


def read_cifar_train_labels(folder: str | Path) -> np.ndarray:
    """The training labels of a CIFAR batches folder, in file order (independent of ltkit's reader)."""
    folder = Path(folder)
    files = sorted(folder.glob("data_batch_*")) or [folder / "train"]
    labels = []
    for path in files:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        labels += batch.get("labels", batch.get("fine_labels"))
    return np.array(labels, dtype=np.int64)


def _write_idx(path: Path, values: np.ndarray, gz: bool) -> None:
    magic = 2051 if values.ndim == 3 else 2049
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in values.shape)
    raw = header + values.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def write_fashion_mnist(root: str | Path, per_class: int = 30, test_per_class: int = 5, *, gz: bool = True,
                        torchvision_layout: bool = False, seed: int = 0) -> Path:
    """Fake Fashion-MNIST IDX files (28x28, 10 classes); returns the folder holding them."""
    rng = np.random.RandomState(seed)
    folder = Path(root) / "FashionMNIST" / "raw" if torchvision_layout else Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, per in (("train", per_class), ("t10k", test_per_class)):
        labels = _shuffled_labels(10, per, rng)
        images = rng.randint(0, 256, size=(len(labels), 28, 28))
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz)
    return folder


def write_png(path: str | Path, size: int = 12, mode: str = "RGB", value: int | None = None,
              seed: int = 0) -> Path:
    """One small PNG: random pixels, or all `value` when given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    rng = np.random.RandomState(seed)
    pixels = np.full(shape, value, np.uint8) if value is not None else rng.randint(0, 256, shape).astype(np.uint8)
    Image.fromarray(pixels).save(path)  # (H, W) -> L, (H, W, 3) -> RGB
    return path


def write_imagefolder(root: str | Path, counts: list[int], test_per_class: int = 2, size: int = 12,
                      mode: str = "RGB", splits: tuple[str, ...] = ("train", "test"), seed: int = 0) -> Path:
    """ROOT/<split>/c<k>/<i>.png: counts[k] images of class k in train, test_per_class in the others."""
    root = Path(root)
    for s, split in enumerate(splits):
        for c, count in enumerate(counts):
            for i in range(count if split == "train" else test_per_class):
                write_png(root / split / f"c{c}" / f"{i:03d}.png", size, mode, seed=seed + 10**5 * s + 1000 * c + i)
    return root


def write_list_files(root: str | Path, counts: list[int], test_per_class: int = 2, val_per_class: int = 0,
                     size: int = 12, mode: str = "RGB", seed: int = 0) -> dict[str, Path]:
    """Images in ROOT/images/c<k>/ and ImageNet-LT style list files ROOT/{train,test,val}.txt."""
    root = Path(root)
    per_split = {"train": counts, "test": [test_per_class] * len(counts)}
    if val_per_class:
        per_split["val"] = [val_per_class] * len(counts)
    lists = {}
    for s, (split, split_counts) in enumerate(per_split.items()):
        lines = []
        for c, count in enumerate(split_counts):
            for i in range(count):
                rel = f"images/c{c}/{split}_{i:03d}.png"
                write_png(root / rel, size, mode, seed=seed + 10**5 * s + 1000 * c + i)
                lines.append(f"{rel} {c}")
        lists[split] = root / f"{split}.txt"
        lists[split].write_text("\n".join(lines) + "\n")
    return lists
