"""Torch datasets over images held in memory (uint8 tensors) or on disk (files), and the
"pools" a source hands to `build_splits`: a pool is a whole source split (images + labels)
from which datasets of chosen rows are cut.

Items are ``(float32 tensor (C, H, W), int label)``; the transform (torchvision.transforms.v2
on uint8 tensors) draws its randomness from torch's global RNG, so with workers=0 a run
repeats exactly under `torch.manual_seed`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from ltkit.errors import DataError

Transform = Callable[[torch.Tensor], torch.Tensor]  # uint8 (C, H, W) -> float32 (C, H', W')


class TensorImageDataset(Dataset):
    """Images held in memory as one uint8 tensor (N, C, H, W)."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray, transform: Transform):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        self.images = images  # (N, C, H, W) uint8
        self.labels = np.asarray(labels, dtype=np.int64)  # (N,)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), int(self.labels[i])  # (C, H, W) float32, label


def load_image(path: str, channels: int) -> torch.Tensor:
    """One image file as uint8 (channels, H, W); unreadable -> DataError naming the file."""
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            return TF.pil_to_tensor(img)  # (C, H, W) uint8
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {e}; replace or remove the file") from None


def image_channels(path: str) -> int:
    """1 for a grayscale image file, 3 for anything in colour."""
    try:
        with Image.open(path) as img:
            mode = img.mode
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e}; replace or remove the file") from None
    return 1 if mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F") else 3


def image_size(path: str) -> tuple[int, int]:
    """(width, height) of an image file, from its header."""
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e}; replace or remove the file") from None


class ImageFileDataset(Dataset):
    """Images read from files on each access (large data sets: ImageNet-LT, Places-LT)."""

    def __init__(self, paths: list[str], labels: np.ndarray, channels: int, transform: Transform):
        self.paths = list(paths)
        self.labels = np.asarray(labels, dtype=np.int64)  # (N,)
        self.channels = channels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = load_image(self.paths[i], self.channels)  # (C, H, W) uint8
        return self.transform(image), int(self.labels[i])


class TensorPool:
    """A whole in-memory source split: uint8 images (N, C, H, W) and labels (N,)."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray):
        if len(images) != len(labels):
            raise DataError(f"{len(images)} images but {len(labels)} labels; the data files do not match")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)

    def dataset(self, rows: np.ndarray | None, transform: Transform) -> TensorImageDataset:
        if rows is None:
            return TensorImageDataset(self.images, self.labels, transform)
        index = torch.as_tensor(rows, dtype=torch.long)
        return TensorImageDataset(self.images[index], self.labels[rows], transform)


class FilePool:
    """A whole on-disk source split: image paths and labels (N,)."""

    def __init__(self, paths: list[str], labels: np.ndarray, channels: int):
        self.paths = list(paths)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.channels = channels

    def dataset(self, rows: np.ndarray | None, transform: Transform) -> ImageFileDataset:
        if rows is None:
            return ImageFileDataset(self.paths, self.labels, self.channels, transform)
        return ImageFileDataset([self.paths[r] for r in rows], self.labels[rows], self.channels, transform)


Pool = TensorPool | FilePool
