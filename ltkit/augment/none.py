"""No augmentation: the paper's "No Aug" ablation, the same balanced batches as FSA.

A batch of B = 2 * Nt * (1 + Na) holds Nt(1+Na) real tail images (``tail_draw``) followed by
as many head images (``head_draw``), a random stored view each; no feature is synthesised.
It is also the only augmenter the training-free classifiers (tau-norm, NCM) accept, meaning
"no batches at all".
"""

from __future__ import annotations

import torch

from ltkit.augment import AUGMENTERS, AugmentConfig, FeatureBank, balanced_tail_count


@AUGMENTERS.register("none")
class NoAugmentation:
    needs_spatial = False
    needs_cosine = False
    balanced_batches = True

    def __init__(self, bank: FeatureBank, cfg: AugmentConfig):
        self.bank, self.cfg = bank, cfg
        self.half = balanced_tail_count(cfg.batch_size, cfg.na) * (1 + cfg.na)  # Nt(1+Na)

    def batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        bank, cfg, n = self.bank, self.cfg, self.half
        tail = bank.draw_tail(n, cfg.tail_draw, generator)  # (B/2,)
        tail_view = bank.draw_views(n, generator)  # (B/2,)
        head = bank.draw_head(n, cfg.head_draw, generator)  # (B/2,)
        head_view = bank.draw_views(n, generator)  # (B/2,)
        index, view = torch.cat([tail, head]), torch.cat([tail_view, head_view])  # (B,)
        return bank.pooled[index, view], bank.labels[index]  # (B, C), (B,)
