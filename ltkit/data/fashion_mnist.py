"""Fashion-MNIST-LT: the LDAM-DRW protocol (n_max 6000, K = 10) on Fashion-MNIST's IDX files.

Files (raw or .gz): ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, directly in ROOT or in torchvision's
layout ``ROOT/FashionMNIST/raw/``. Without --root, /usr/share/datasets/fashion-mnist (Debian's
package dataset-fashion-mnist) is used when it exists.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from ltkit.data.datasets import TensorPool
from ltkit.data.sources import DATASETS, SourceData, existing_root
from ltkit.data.spec import DatasetSpec
from ltkit.errors import ConfigError, DataError

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MEAN, STD = (0.2860,), (0.3530,)
HOW_TO_GET = ("install it with `apt-get install dataset-fashion-mnist` (Debian, files in "
              f"{DEFAULT_ROOT}) or add --download with --root DIR")
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049  # IDX: 0x0803 uint8 3-d, 0x0801 uint8 1-d


def _find(folder: Path, stem: str) -> Path:
    """The raw or gzipped file `stem` in `folder` or its torchvision layout FashionMNIST/raw/."""
    for base in (folder, folder / "FashionMNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (base / name).is_file():
                return base / name
    raise DataError(f"no {stem}[.gz] in {folder} (nor in {folder}/FashionMNIST/raw); {HOW_TO_GET}")


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file (raw or .gz) of uint8 values: images (N, H, W) for 2051, labels (N,) for 2049."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}; replace the file") from None
    dims = 3 if magic == IMAGES_MAGIC else 1
    header = 4 * (1 + dims)
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        raise DataError(f"{path} is not an IDX file of {'images' if dims == 3 else 'labels'} "
                        f"(magic {magic} expected); replace the file")
    shape = tuple(int.from_bytes(raw[4 * (i + 1):4 * (i + 2)], "big") for i in range(dims))
    values = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if values.size != int(np.prod(shape)):
        raise DataError(f"{path} holds {values.size} values but its header says {shape}; the file is truncated")
    return values.reshape(shape)


def read_fashion_mnist(folder: Path) -> tuple[TensorPool, TensorPool]:
    """Train and test pools: images uint8 (N, 1, 28, 28), labels (N,)."""
    pools = []
    for prefix in ("train", "t10k"):
        images = read_idx(_find(folder, f"{prefix}-images-idx3-ubyte"), IMAGES_MAGIC)  # (N, H, W)
        labels = read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte"), LABELS_MAGIC).astype(np.int64)
        if len(labels) and labels.max() >= len(CLASS_NAMES):
            raise DataError(f"{prefix} labels in {folder} go up to {labels.max()}; Fashion-MNIST has 10 classes")
        pools.append(TensorPool(torch.from_numpy(images.copy()).unsqueeze(1), labels))  # (N, 1, H, W)
    return pools[0], pools[1]


def _download(spec: DatasetSpec) -> None:
    if spec.root is None:
        raise ConfigError("--download needs --root DIR to put Fashion-MNIST in")
    import torchvision  # heavy import, only here

    try:
        for train in (True, False):
            torchvision.datasets.FashionMNIST(spec.root, train=train, download=True)
    except (OSError, RuntimeError) as e:
        raise DataError(f"downloading Fashion-MNIST into {spec.root} failed: {e}; {HOW_TO_GET}") from None


@DATASETS.register("fashion-mnist-lt")
def load_fashion_mnist(spec: DatasetSpec) -> SourceData:
    if spec.download:
        _download(spec)
    if spec.root is None and Path(DEFAULT_ROOT).is_dir():
        spec.root = DEFAULT_ROOT  # recorded, so a checkpoint says where its data came from
    root = existing_root(spec, HOW_TO_GET)
    train, test = read_fashion_mnist(root)
    if spec.channels not in (None, 1):
        raise ConfigError(f"Fashion-MNIST images have 1 channel; drop --channels {spec.channels}")
    return SourceData(train=train, test=test, own_val=None, class_names=list(CLASS_NAMES), in_channels=1,
                      native_size=28, image_size=spec.image_size or 28, mean=MEAN, std=STD,
                      augment="crop", crop_padding=2)
