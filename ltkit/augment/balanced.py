"""Class-balanced sampling over all classes (Kang et al.'s cRT / LWS), no augmentation.

Each of the B samples draws a class uniformly among the classes that have training images,
then one of its images uniformly, then a random stored view. Head and tail are not told
apart, so the batch size is free.
"""

from __future__ import annotations

import torch

from ltkit.augment import AUGMENTERS, AugmentConfig, FeatureBank


@AUGMENTERS.register("class-balanced")
class ClassBalanced:
    needs_spatial = False
    needs_cosine = False
    balanced_batches = False

    def __init__(self, bank: FeatureBank, cfg: AugmentConfig):
        self.bank, self.cfg = bank, cfg
        self.classes = torch.nonzero(bank.class_counts > 0).flatten()  # (K',) classes with images

    def batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        bank, n = self.bank, self.cfg.batch_size
        pick = torch.randint(self.classes.numel(), (n,), generator=generator, device=bank.device)
        index = bank.draw_from_classes(self.classes[pick], generator)  # (B,)
        view = bank.draw_views(n, generator)  # (B,)
        return bank.pooled[index, view], bank.labels[index]  # (B, C), (B,)
