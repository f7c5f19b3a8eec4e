"""H2T, head-to-tail feature fusion (Li et al., AAAI 2024; github Keke921/H2T).

Each batch pairs B class-balanced draws (a class uniformly, then one of its images: tail-rich)
with B instance draws (uniform over the images: head-dominated). A random set of
``round_down(fusion_ratio * C)`` channels, one set per batch as in the authors' code, is
copied from the instance sample into the balanced sample, whose label is kept:

    x_fused[:, S] = x_instance[:, S],   x_fused[:, ~S] = x_balanced[:, ~S],   y = y_balanced

The paper fuses the backbone's last feature maps (B, C, H, W) along channels before global
average pooling; pooling acts on each channel alone, so fusing the cached pooled features
(B, C) gives exactly the pooled fused maps. Each sample uses a random stored view when the
store has views; with a single view the fused features recombine the same un-augmented
features, and H2T is expected to help little (docs/phase2.md measures it).

``fusion_ratio`` ``auto`` (the default): chosen on the validation split among ``auto_grid``,
the paper's 0.25 (CIFAR-100-LT) first (`ltkit.augment_auto`).
"""

from __future__ import annotations

import torch

from ltkit.augment import AUGMENTERS, AugmentConfig, FeatureBank


@AUGMENTERS.register("h2t")
class HeadToTail:
    needs_spatial = False
    needs_cosine = False
    balanced_batches = False
    auto_grid = ({"fusion_ratio": 0.25}, {"fusion_ratio": 0.1}, {"fusion_ratio": 0.4})  # tried when auto

    def __init__(self, bank: FeatureBank, cfg: AugmentConfig):
        self.bank, self.cfg = bank, cfg
        self.classes = torch.nonzero(bank.class_counts > 0).flatten()  # (K',) classes with images
        self.fused = int(cfg.fusion_ratio * bank.feature_dim)  # channels taken from the instance sample

    def batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        bank, n = self.bank, self.cfg.batch_size
        pick = torch.randint(self.classes.numel(), (n,), generator=generator, device=bank.device)
        balanced = bank.draw_from_classes(self.classes[pick], generator)  # (B,) label kept
        instance = torch.randint(bank.labels.numel(), (n,), generator=generator, device=bank.device)  # (B,)
        x = bank.pooled[balanced, bank.draw_views(n, generator)]  # (B, C) a copy (advanced indexing)
        donor = bank.pooled[instance, bank.draw_views(n, generator)]  # (B, C)
        channels = torch.randperm(bank.feature_dim, generator=generator, device=bank.device)[:self.fused]  # (S,)
        x[:, channels] = donor[:, channels]
        return x, bank.labels[balanced]  # (B, C), (B,)
