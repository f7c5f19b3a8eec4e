"""Train and evaluation transforms (torchvision.transforms.v2 on uint8 (C, H, W) tensors).

Training (the usual recipe of each data set):
- "crop": pad + random crop to the image size (CIFAR: pad 4; Fashion-MNIST: pad 2;
  synthetic: pad 2);
- "resized-crop": RandomResizedCrop to the image size (imagefolder);
then a random horizontal flip, except for synthetic, whose classes differ in orientation,
then the automatic augmentation policy asked for (`POLICIES`, on the uint8 image as torchvision's
references place it; grey 1-channel images included).
Evaluation: no augmentation; "resized-crop" sources are resized to size * 256 / 224 and
centre-cropped, as in the ImageNet recipe. Both end with float32 in [0, 1] and per-channel
normalisation. All randomness comes from torch's global RNG.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from ltkit import choices
from ltkit.data.sources import SourceData
from ltkit.errors import ConfigError
from ltkit.registry import Registry

AUGMENTS = ("crop", "resized-crop")
# name -> () -> a v2 transform, or None for none
POLICIES: Registry = Registry("augmentation policy", declared=choices.AUGMENT_POLICIES)
POLICIES.register("none")(lambda: None)
POLICIES.register("randaugment")(v2.RandAugment)  # Cubuk et al.: 2 ops of magnitude 9 of 31
POLICIES.register("trivialaugment")(v2.TrivialAugmentWide)  # Mueller & Hutter: 1 op, random magnitude
POLICIES.register("autoaugment")(lambda: v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10))  # small images
POLICIES.register("autoaugment-imagenet")(lambda: v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET))


def make_transform(source: SourceData, *, train: bool, policy: str = "none") -> v2.Compose:
    """The transform of one split: uint8 (C, H, W) -> float32 (C, size, size), normalised;
    `policy` (a `POLICIES` name) applies to a training transform only."""
    size = source.image_size
    steps: list[v2.Transform] = []
    if source.augment == "crop":
        if source.native_size != size:
            steps.append(v2.Resize((size, size), antialias=True))
        if train:
            steps.append(v2.RandomCrop(size, padding=source.crop_padding))
    elif source.augment == "resized-crop":
        if train:
            steps.append(v2.RandomResizedCrop(size, antialias=True))
        else:
            steps += [v2.Resize(round(size * 256 / 224), antialias=True), v2.CenterCrop(size)]
    else:
        raise ConfigError(f"unknown augmentation {source.augment!r}; valid: {', '.join(AUGMENTS)}")
    if train and source.flip:
        steps.append(v2.RandomHorizontalFlip())
    auto = POLICIES.get(policy)() if train else None
    if auto is not None:
        steps.append(auto)
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(source.mean), list(source.std))]
    return v2.Compose(steps)
