"""RSG, the rare-class sample generator (Wang et al., CVPR 2021), a training-only module.

RSG sits between two stages of the backbone (`Backbone.forward_until` / `forward_from`) and
sees the batch's feature maps there. It has two parts:
- Centre estimation with a contrastive module (CESC). Every class has `n_centers` centres;
  a sample is softly assigned to its own class's centres by gamma = softmax(p W_y + b_y)
  on its pooled map p, and the loss is sum_k gamma_k ||f - c_{y,k}||^2 (summed over C, H, W,
  averaged over the batch: the reference's `compute_cesc_loss` normalisation, so at its
  weight 0.1 this term is in the thousands on ResNet-32 maps and is most of the total loss,
  as in their runs; it trains only the module's own parameters, on detached maps). Until
  generation starts, a contrastive module also learns to tell whether two maps come from the
  same class (cross-entropy on pairs of the batch).
- Sample generation, from `start_epoch` on. A head-class map's displacement from its nearest
  centre, v = f_h - c_h, carries class-independent variation; a learned 3x3 convolution T
  turns it into T(v), and f_t + T(v) is a new sample of the tail class of f_t. The
  maximized-vector (MV) loss trains T: the (now frozen) contrastive module must judge the
  pair (f_h, T(v)) as different classes (T(v) holds no head-class identity), T(v) keeps the
  size of v at every position, and T(v) points the way f_t already lies from its own
  centre (1 - cos(T(v), f_t - c_t) per position), so new samples widen the tail class.
The module's parameters train only through its own losses: it works on detached maps, as
the reference does; the generated samples pass through the later stages and the
classifier with their tail labels, so the backbone learns from them there.

Defaults and choices, with their source (the authors' code, github.com/Jianf-Wang/RSG):
- 15 centres per class, contrastive module width 256 (their ResNet-32 and ResNet-50
  models; the class's own default is 128), transfer strength 1.0, loss weights 0.1 (CESC)
  and 0.01 (MV), inserted after the second-to-last residual stage (after stage 2 of
  ResNet-32's 3, after layer3 of ResNet-50's 4).
- Head classes: the `head_ratio` x K classes with the most training images (theirs:
  int(0.2 K), largest first); here at least one, and at least one class must stay tail.
- Generation from epoch 160 of 200 in their CIFAR runs (`epoch_thresh` 159, `epoch >
  epoch_thresh`), the epoch DRW starts; ours counts from 0 and names the first epoch that
  generates (`start_epoch`).
- Pairing: a batch's head and tail samples are taken in batch order and paired cyclically,
  segment = max(1, int(max(n_h, n_t) * strength / min(n_h, n_t))) rounds of the smaller
  side, so about strength x (the larger side) samples are generated: their loop of
  segments, here as one batched gather. Pairs for the contrastive module are row i of the
  batch's first half with row i - 1 of its second half: their first-half/second-half
  pairing would pair each image with its own second view in an SCL two-view batch.
- Per-position vectors: their code reshapes (N, C, H, W) maps with `view(-1, C)`, whose
  rows mix positions; we take the C-vector at each position, as the paper describes.
  Their direction term, sum_j |u_j v_j - 1| over unit vectors u, v, equals C - cos(u, v),
  so 1 - cos differs from it only by a constant.
- The generation path runs on every step from `start_epoch` on, even with no head-tail
  pair in the batch (zero samples), so every process of a distributed run builds the same
  graph and their collective operations stay in step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ltkit.errors import ConfigError


def head_classes(counts: Sequence[int], ratio: float) -> list[int]:
    """The max(1, int(ratio * K)) classes with the most training images, largest first."""
    k = len(counts)
    if not 0.0 < ratio < 1.0:
        raise ConfigError(f"--rsg-head-ratio must lie in (0, 1), got {ratio}")
    n_head = max(1, int(ratio * k))
    if n_head >= k:
        raise ConfigError(f"RSG needs head and tail classes, but {k} class(es) leave none for "
                          "the tail; use more classes or a smaller --rsg-head-ratio")
    order = sorted(range(k), key=lambda c: (-counts[c], c))  # ties: lower class index first
    return order[:n_head]


def contrast_pairs(n: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (P,) x 2 of the contrastive module's pairs in a batch of n: row i of the first half
    with row i - 1 (cyclically) of the second half, never an image with its own other view."""
    half = n // 2
    first = torch.arange(half, device=device)  # (P,)
    return first, half + (first - 1) % max(half, 1)


class RSGOutput(NamedTuple):
    features: torch.Tensor  # (B + M, C, H, W): the batch's maps, then M generated tail maps
    targets: torch.Tensor  # (B + M,): the batch's labels, then the generated maps' tail labels
    cesc_loss: torch.Tensor  # () centre estimation (+ contrastive pairs before generation)
    mv_loss: torch.Tensor  # () maximized-vector loss; 0 before generation
    generated: int  # M


class RSG(nn.Module):
    """Rare-class sample generator for maps of `channels` channels (any spatial size)."""

    def __init__(self, num_classes: int, channels: int, head: Sequence[int], *,
                 n_centers: int = 15, contrastive_dim: int = 256, strength: float = 1.0,
                 start_epoch: int = 0):
        super().__init__()
        if n_centers < 1 or contrastive_dim < 1 or strength <= 0 or start_epoch < 0:
            raise ConfigError(f"RSG needs n_centers >= 1, contrastive_dim >= 1, strength > 0 and "
                              f"start_epoch >= 0, got {n_centers}, {contrastive_dim}, "
                              f"{strength} and {start_epoch}")
        is_head = torch.zeros(num_classes, dtype=torch.bool)
        is_head[list(head)] = True
        self.register_buffer("is_head", is_head)  # (K,)
        self.n_centers, self.strength, self.start_epoch = n_centers, strength, start_epoch
        # soft assignment of a pooled map to its class's centres: softmax(p @ W[y] + b[y])
        self.assign_weight = nn.Parameter(torch.randn(num_classes, channels, n_centers))  # (K, C, n)
        self.assign_bias = nn.Parameter(torch.ones(num_classes, n_centers))  # (K, n)
        self.centers = nn.Parameter(torch.zeros(num_classes, n_centers, channels))  # (K, n, C)
        self.transform = nn.Conv2d(channels, channels, 3, padding=1)  # T: displacement -> new one
        self.contrastive = nn.Sequential(  # a pair of maps -> same class or not
            nn.Conv2d(2 * channels, contrastive_dim, 1), nn.ReLU(inplace=True),
            nn.Conv2d(contrastive_dim, contrastive_dim, 3, padding=1))
        self.contrastive_fc = nn.Linear(contrastive_dim, 2)
        for m in self.modules():  # the reference's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, fmap: torch.Tensor, targets: torch.Tensor, epoch: int) -> RSGOutput:
        f = fmap.detach()  # (B, C, H, W): RSG's own losses do not reach the backbone
        pooled = f.float().mean(dim=(2, 3))  # (B, C)
        logits = torch.einsum("bc,bcn->bn", pooled, self.assign_weight[targets])  # (B, n)
        gamma = (logits + self.assign_bias[targets]).softmax(dim=1)  # (B, n)
        cesc = self.center_loss(f, pooled, gamma, targets)
        zero = fmap.new_zeros((), dtype=torch.float32)
        if epoch < self.start_epoch:
            return RSGOutput(fmap, targets, cesc + self.pair_loss(f, targets), zero, 0)
        head_rows, tail_rows = self.pairs(targets)
        nearest = self.centers[targets, gamma.argmax(dim=1)].detach()  # (B, C) each one's centre
        new, mv = self.transfer(f, nearest, head_rows, tail_rows)
        return RSGOutput(torch.cat([fmap, new.to(fmap.dtype)]),
                         torch.cat([targets, targets[tail_rows]]), cesc, mv, len(tail_rows))

    def center_loss(self, f: torch.Tensor, pooled: torch.Tensor, gamma: torch.Tensor,
                    targets: torch.Tensor) -> torch.Tensor:
        """sum_k gamma_k ||f - c_k||^2 over (C, H, W), averaged over the batch.

        ||f - c||^2 = ||f - p||^2 + HW ||p - c||^2 with p the pooled map: exact, and it
        never builds the (B, n, C, H, W) difference."""
        hw = f.shape[2] * f.shape[3]
        spread = (f.float() - pooled[:, :, None, None]).pow(2).sum(dim=(1, 2, 3))  # (B,)
        to_centers = (pooled[:, None, :] - self.centers[targets]).pow(2).sum(2)  # (B, n)
        return (gamma * (spread[:, None] + hw * to_centers)).sum() / len(f)

    def _pair_logits(self, a: torch.Tensor, b: torch.Tensor, *, frozen: bool = False) -> torch.Tensor:
        """(P, C, H, W) x 2 -> (P, 2) logits of "same class" (1) or not (0)."""
        x = torch.cat([a, b], dim=1)  # (P, 2C, H, W)
        if frozen:  # used, not trained: gradients reach the inputs only
            params = {k: v.detach() for k, v in self.contrastive.named_parameters()}
            x = functional_call(self.contrastive, params, (x,))
            return F.linear(x.mean(dim=(2, 3)), self.contrastive_fc.weight.detach(),
                            self.contrastive_fc.bias.detach())
        return self.contrastive_fc(self.contrastive(x).mean(dim=(2, 3)))  # (P, 2)

    def pair_loss(self, f: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The contrastive module's cross-entropy on pairs of the batch: same class or not."""
        first, second = contrast_pairs(len(f), f.device)
        if len(first) == 0:
            return f.new_zeros((), dtype=torch.float32)
        same = (targets[first] == targets[second]).long()  # (P,)
        return F.cross_entropy(self._pair_logits(f[first], f[second]).float(), same)

    def pairs(self, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Row indices (M,) of the head and tail sample of each generated sample."""
        head = self.is_head[targets]  # (B,)
        head_rows, tail_rows = head.nonzero().flatten(), (~head).nonzero().flatten()
        n_h, n_t = len(head_rows), len(tail_rows)
        if n_h == 0 or n_t == 0:
            return head_rows[:0], tail_rows[:0]
        segment = max(1, int(max(n_h, n_t) * self.strength / min(n_h, n_t)))
        order = torch.arange(segment * min(n_h, n_t), device=targets.device)  # (M,)
        return head_rows[order % n_h], tail_rows[order % n_t]

    def transfer(self, f: torch.Tensor, nearest: torch.Tensor, head_rows: torch.Tensor,
                 tail_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """New tail maps f_t + T(f_h - c_h), (M, C, H, W), and the MV loss."""
        m = max(len(head_rows), 1)  # sums over zero pairs stay 0, not nan
        f_head, f_tail = f[head_rows].float(), f[tail_rows].float()  # (M, C, H, W)
        v = f_head - nearest[head_rows][:, :, None, None]  # (M, C, H, W) head variation
        tv = self.transform(v).float()  # (M, C, H, W)
        tail_offset = f_tail - nearest[tail_rows][:, :, None, None]  # (M, C, H, W)
        judged = self._pair_logits(f_head, tv, frozen=True).float()  # (M, 2)
        adversarial = F.cross_entropy(judged, torch.zeros_like(head_rows), reduction="sum") / m
        size = (tv.norm(dim=1) - v.norm(dim=1)).abs().sum() / m  # norms of (M, H, W) C-vectors
        cosine = (F.normalize(tv, dim=1) * F.normalize(tail_offset, dim=1)).sum(dim=1)  # (M, H, W)
        direction = (1.0 - cosine).sum() / m
        return f_tail + tv, adversarial + size + direction
