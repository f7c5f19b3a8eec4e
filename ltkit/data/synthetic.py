"""A generated data set with learnable classes, for tests and offline demos.

Each image is a noisy grey background with one soft elongated blob. The blob carries the
class: its colour (a class hue; grayscale: bright or dark) and its orientation; its centre
sits at a class position on a ring around the image centre, jittered per image. A tiny CNN
separates the colour classes in a few epochs (grayscale, told apart by orientation, takes
longer), and the evidence sits in one place, which makes class activation maps meaningful.
There is no flip augmentation: it would mirror the orientations. Everything follows from
spec.seed: same seed, same images. n_max images per class are generated for training
(before the long-tail profile) and test_per_class for test.
"""

from __future__ import annotations

import colorsys

import numpy as np
import torch

from ltkit.data.datasets import TensorPool
from ltkit.data.sources import DATASETS, SourceData
from ltkit.data.spec import DatasetSpec
from ltkit.errors import ConfigError

GOLDEN = 0.6180339887  # spreads hues and orientations so neighbouring classes differ


def _class_style(k: int, channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class blob colour (K, C), orientation (K,) and position angle on the ring (K,)."""
    c = np.arange(k)
    if channels == 3:
        colour = np.array([colorsys.hsv_to_rgb((i * GOLDEN) % 1.0, 0.9, 1.0) for i in c])
        orientation = np.pi * ((c * GOLDEN * 2) % 1.0)
    else:  # grayscale: bright or dark (away from the 0.45 background) x evenly spread orientations
        pairs = (k + 1) // 2
        colour = np.where(c % 2 == 0, 1.0, 0.0)[:, None]  # (K, 1)
        orientation = np.pi * (c // 2) / pairs
    angle = 2 * np.pi * np.arange(k) / k
    return colour, orientation, angle


def generate(labels: np.ndarray, *, num_classes: int, size: int, channels: int,
             rng: np.random.RandomState) -> np.ndarray:
    """Images (N, C, size, size) uint8 for `labels` (N,) in 0..num_classes-1."""
    colour, orientation, angle = _class_style(num_classes, channels)
    n = len(labels)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size  # (H, W) in [0, 1)
    jitter = rng.uniform(-0.06, 0.06, size=(n, 2))  # centre jitter, fraction of the side
    cy = 0.5 + 0.22 * np.sin(angle[labels]) + jitter[:, 0]  # (N,)
    cx = 0.5 + 0.22 * np.cos(angle[labels]) + jitter[:, 1]
    sigma = rng.uniform(0.11, 0.15, size=n)  # blob radius, fraction of the side
    theta = orientation[labels][:, None, None]  # (N, 1, 1)
    dy, dx = yy[None] - cy[:, None, None], xx[None] - cx[:, None, None]  # (N, H, W)
    along, across = dx * np.cos(theta) + dy * np.sin(theta), dy * np.cos(theta) - dx * np.sin(theta)
    s2 = 2 * sigma[:, None, None] ** 2  # (N, 1, 1)
    envelope = np.exp(-along**2 / (s2 * 4.0) - across**2 / (s2 * 0.4))  # (N, H, W), an ellipse along theta
    strength = rng.uniform(0.8, 1.0, size=(n, 1, 1, 1))  # per-image contrast
    blob = colour[labels][:, :, None, None] * strength  # (N, C, 1, 1)
    background = 0.45 + rng.normal(0, 0.12, size=(n, channels, size, size))  # (N, C, H, W)
    image = background * (1 - envelope[:, None]) + blob * envelope[:, None]
    image += rng.normal(0, 0.05, size=image.shape)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def _generate_split(k: int, per_class: int, *, size: int, channels: int,
                    rng: np.random.RandomState, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Images (K * per_class, C, size, size) uint8 and labels, class by class, in bounded memory."""
    labels = np.repeat(np.arange(k), per_class)  # (N,)
    images = np.empty((len(labels), channels, size, size), dtype=np.uint8)
    for start in range(0, len(labels), chunk):
        part = labels[start:start + chunk]
        images[start:start + len(part)] = generate(part, num_classes=k, size=size, channels=channels, rng=rng)
    return images, labels


@DATASETS.register("synthetic")
def load_synthetic(spec: DatasetSpec) -> SourceData:
    if not 2 <= spec.num_classes <= 10_000:
        raise ConfigError(f"synthetic num_classes must be 2-10000, got {spec.num_classes}")
    if spec.n_max < 1 or spec.test_per_class < 1:
        raise ConfigError(f"synthetic n_max and test_per_class must be >= 1, got {spec.n_max}, {spec.test_per_class}")
    size, channels, k = spec.image_size or 16, spec.channels or 3, spec.num_classes
    rng = np.random.RandomState(spec.seed)
    train, train_labels = _generate_split(k, spec.n_max, size=size, channels=channels, rng=rng)
    test, test_labels = _generate_split(k, spec.test_per_class, size=size, channels=channels, rng=rng)
    train_t = torch.from_numpy(train)  # (N, C, H, W) uint8
    mean = train_t.float().mean(dim=(0, 2, 3)) / 255  # (C,)
    std = train_t.float().std(dim=(0, 2, 3)) / 255  # (C,)
    return SourceData(
        train=TensorPool(train_t, train_labels), test=TensorPool(torch.from_numpy(test), test_labels),
        own_val=None, class_names=[f"class{c}" for c in range(k)], in_channels=channels, native_size=size,
        image_size=size, mean=tuple(round(v, 4) for v in mean.tolist()),
        std=tuple(round(v, 4) for v in std.tolist()),
        augment="crop", crop_padding=2, flip=False)  # a flip would mirror the class orientations
