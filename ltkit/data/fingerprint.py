"""A cheap fingerprint of the data a run reads, so a rerun can tell the data changed.

Options alone do not say the data is the same: a folder can gain, lose or replace images
under the same --root. The fingerprint is a SHA-256 over every split's labels and images:
images held in memory by their bytes, image files by path, size and modification time (a
stat per file, never a read: cheap on a million files).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from ltkit.data.datasets import ImageFileDataset, TensorImageDataset
from ltkit.data.spec import Splits
from ltkit.errors import DataError

FINGERPRINTED = ("train", "val", "test", "bound")  # the splits a run reads


def data_fingerprint(splits: Splits) -> str:
    """Hex SHA-256 of the images and labels of every split of `splits`."""
    digest = hashlib.sha256()
    for name in FINGERPRINTED:
        dataset = getattr(splits, name)
        digest.update(f"{name}:{0 if dataset is None else len(dataset)}\n".encode())
        if dataset is None:
            continue
        digest.update(np.ascontiguousarray(dataset.labels, dtype=np.int64).tobytes())  # (N,)
        if isinstance(dataset, TensorImageDataset):
            digest.update(dataset.images.contiguous().numpy().data)  # (N, C, H, W) uint8
        elif isinstance(dataset, ImageFileDataset):
            for path in dataset.paths:
                digest.update(_file_entry(path))
        else:
            raise TypeError(f"no fingerprint for a {type(dataset).__name__}")
    return digest.hexdigest()


def _file_entry(path: str) -> bytes:
    try:
        stat = os.stat(path)
    except OSError as e:
        raise DataError(f"cannot read image {path}: {e.strerror}; replace or remove the file") from None
    return f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()
