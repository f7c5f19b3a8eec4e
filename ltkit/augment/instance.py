"""Instance sampling: every training image equally likely (the natural, long-tailed label
distribution), a random stored view each, no augmentation.

The batches of the methods that re-balance through their loss rather than their batches
(la-loss, wb, disalign): on class-balanced batches their re-weighting would count the tail
twice, so they refuse any other augmenter. The batch size is free.
"""

from __future__ import annotations

import torch

from ltkit.augment import AUGMENTERS, AugmentConfig, FeatureBank


@AUGMENTERS.register("instance")
class InstanceSampling:
    needs_spatial = False
    needs_cosine = False
    balanced_batches = False

    def __init__(self, bank: FeatureBank, cfg: AugmentConfig):
        self.bank, self.cfg = bank, cfg

    def batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        bank, n = self.bank, self.cfg.batch_size
        index = torch.randint(bank.labels.numel(), (n,), generator=generator, device=bank.device)  # (B,)
        view = bank.draw_views(n, generator)  # (B,)
        return bank.pooled[index, view], bank.labels[index]  # (B, C), (B,)
