"""CIFAR-10-LT and CIFAR-100-LT, read from torchvision's on-disk CIFAR format.

Layout (what `torchvision.datasets.CIFAR10/100(root, download=True)` writes):
``ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` and
``ROOT/cifar-100-python/{train, test, meta}``; each file is a pickle of a dict whose "data"
is uint8 (N, 3072) (channel-major 32x32 images). The reader here loads them the way
torchvision does (pickle, encoding="latin1") but without torchvision's md5 check, so small
fake copies in the same format read too.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ltkit.data.datasets import TensorPool
from ltkit.data.sources import DATASETS, SourceData, existing_root
from ltkit.data.spec import DatasetSpec
from ltkit.errors import ConfigError, DataError


@dataclass(frozen=True)
class CifarLayout:
    folder: str  # folder under ROOT
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str  # key of the labels in each batch dict
    names_key: str  # key of the class names in the meta dict
    mean: tuple[float, ...]
    std: tuple[float, ...]


CIFAR10 = CifarLayout("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                      "batches.meta", "labels", "label_names",
                      # LDAM-DRW's normalisation, kept so results compare with theirs
                      (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
CIFAR100 = CifarLayout("cifar-100-python", ("train",), "test", "meta", "fine_labels", "fine_label_names",
                       (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"missing CIFAR file {path}; fetch the data set with --download")
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError) as e:
        raise DataError(f"cannot read CIFAR file {path} ({e}); delete it and fetch again with --download") from None


def _read_batches(folder: Path, files: tuple[str, ...], label_key: str) -> tuple[torch.Tensor, np.ndarray]:
    data, labels = [], []
    for name in files:
        batch = _unpickle(folder / name)
        if "data" not in batch or label_key not in batch:
            raise DataError(f"{folder / name} has no 'data'/'{label_key}' entries; it is not a CIFAR batch")
        data.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))  # (n, C, H, W)
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return torch.from_numpy(np.concatenate(data)), np.concatenate(labels)


def read_cifar(root: Path, layout: CifarLayout) -> tuple[TensorPool, TensorPool, list[str]]:
    """Train pool, test pool and class names from ROOT (or ROOT being the batches folder itself)."""
    folder = root / layout.folder
    if not folder.is_dir() and (root / layout.meta_file).is_file():
        folder = root
    if not folder.is_dir():
        raise DataError(f"no {layout.folder}/ under {root}; fetch CIFAR there with --download")
    names = list(_unpickle(folder / layout.meta_file)[layout.names_key])
    train = TensorPool(*_read_batches(folder, layout.train_files, layout.label_key))
    test = TensorPool(*_read_batches(folder, (layout.test_file,), layout.label_key))
    for split, pool in (("train", train), ("test", test)):
        if len(pool.labels) and (pool.labels.min() < 0 or pool.labels.max() >= len(names)):
            raise DataError(f"CIFAR {split} labels under {folder} fall outside 0..{len(names) - 1}")
    return train, test, names


def _download(spec: DatasetSpec, hundred: bool) -> None:
    if spec.root is None:
        raise ConfigError(f"--download needs --root DIR to put {spec.name} in")
    import torchvision  # heavy import, only here

    cls = torchvision.datasets.CIFAR100 if hundred else torchvision.datasets.CIFAR10
    try:
        for train in (True, False):
            cls(spec.root, train=train, download=True)
    except (OSError, RuntimeError) as e:
        raise DataError(f"downloading {spec.name} into {spec.root} failed: {e}; check the network "
                        "or put the extracted files there by hand") from None


def _load(spec: DatasetSpec, layout: CifarLayout, hundred: bool) -> SourceData:
    if spec.download:
        _download(spec, hundred)
    root = existing_root(spec, "fetch CIFAR into it with --download (torchvision's format)")
    train, test, names = read_cifar(root, layout)
    if spec.channels not in (None, 3):
        raise ConfigError(f"{spec.name} images have 3 channels; drop --channels {spec.channels}")
    return SourceData(train=train, test=test, own_val=None, class_names=names, in_channels=3,
                      native_size=32, image_size=spec.image_size or 32, mean=layout.mean,
                      std=layout.std, augment="crop", crop_padding=4)


@DATASETS.register("cifar10-lt")
def load_cifar10(spec: DatasetSpec) -> SourceData:
    return _load(spec, CIFAR10, hundred=False)


@DATASETS.register("cifar100-lt")
def load_cifar100(spec: DatasetSpec) -> SourceData:
    return _load(spec, CIFAR100, hundred=True)
