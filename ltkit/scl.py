"""Supervised contrastive learning (SCL) as a term added to the classification loss.

SupCon (Khosla et al., NeurIPS 2020, "Supervised Contrastive Learning", eq. 2, L^sup_out):
for every anchor i of a batch of N projections z (unit length),

    l_i = -1/|P(i)| * sum_{p in P(i)} log( exp(z_i.z_p / T) / sum_{a != i} exp(z_i.z_a / T) )

where P(i) are the other samples of i's class (including i's second view), and the loss is
the mean of l_i over the anchors (as the authors' `SupConLoss`, contrast_mode "all").
What we chose, and why:
- Temperature T = 0.07: the default of the authors' code (`SupConLoss` and `main_supcon.py
  --temp`); their README's CIFAR runs use 0.1, also a sound choice (`--scl-temperature`).
  Their code multiplies the loss by T / base_temperature (0.07), a rescaling of the weight;
  `base_temperature` here defaults to None, no rescaling, so the loss is the formula above.
- Projection head: their `SupConResNet` "mlp" head, Linear(C, C) -> ReLU -> Linear(C, 128),
  then L2-normalised, on the globally pooled features. It exists only during training: the
  checkpoint keeps the plain backbone, so `extract` and CAMs see what they always see.
- Two augmented views per image (their `TwoCropTransform`): `TwoViewDataset` calls the
  dataset's own transform twice; the batch becomes [views 1; views 2], 2B images, and the
  classification loss sees both views too (both are ordinary augmented training images).
- Anchors without a positive (possible only with one view) are left out of the mean; the
  authors' code divides by zero there.
- Several processes (torchrun): the projections of all processes are gathered (with their
  gradients), so every anchor is contrasted with the whole global batch and N processes
  compute what one process computes on the same global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ltkit.errors import ConfigError


class ProjectionHead(nn.Module):
    """SupCon's MLP head: (B, C) pooled features -> (B, out_dim) unit vectors."""

    def __init__(self, in_dim: int, out_dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True),
                                 nn.Linear(in_dim, out_dim))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(pooled), dim=1)  # (B, out_dim)


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, *, temperature: float = 0.07,
                base_temperature: float | None = None) -> torch.Tensor:
    """SupCon over (N, D) unit projections `z` with labels (N,); every row is an anchor."""
    index = torch.arange(len(z), device=z.device)  # (N,) each anchor's own row in z
    return _supcon(z, labels, z, labels, index, temperature, base_temperature)


def _supcon(anchors: torch.Tensor, anchor_labels: torch.Tensor, contrast: torch.Tensor,
            contrast_labels: torch.Tensor, self_index: torch.Tensor, temperature: float,
            base_temperature: float | None) -> torch.Tensor:
    """Anchors (A, D) against the contrast set (N, D) that holds each anchor at `self_index`."""
    if temperature <= 0:
        raise ConfigError(f"the SupCon temperature must be positive, got {temperature}")
    logits = anchors.float() @ contrast.float().t() / temperature  # (A, N)
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[torch.arange(len(anchors), device=logits.device), self_index] = True  # (A, N)
    positive = (anchor_labels[:, None] == contrast_labels[None, :]) & ~is_self  # (A, N)
    log_denominator = logits.masked_fill(is_self, float("-inf")).logsumexp(1, keepdim=True)  # (A, 1)
    log_prob = logits - log_denominator  # (A, N)
    n_pos = positive.sum(1)  # (A,)
    has_pos = n_pos > 0
    if not bool(has_pos.any()):  # no anchor has a positive: nothing to pull together
        return anchors.sum() * 0.0
    mean_log_prob_pos = (log_prob * positive).sum(1)[has_pos] / n_pos[has_pos]  # (A',)
    scale = 1.0 if base_temperature is None else temperature / base_temperature
    return -scale * mean_log_prob_pos.mean()


class SupConLoss(nn.Module):
    """SupCon for training: the local batch, or under torchrun the global batch."""

    def __init__(self, temperature: float = 0.07, base_temperature: float | None = None):
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"--scl-temperature must be positive, got {temperature}")
        self.temperature, self.base_temperature = temperature, base_temperature

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return supcon_loss(z, labels, temperature=self.temperature,
                               base_temperature=self.base_temperature)
        sizes = _gather_sizes(len(z), z.device)
        contrast = _GatherRows.apply(z, sizes)  # (N_global, D), gradients flow back to each rank
        contrast_labels = _GatherRows.apply(labels, sizes)  # (N_global,)
        start = sum(sizes[:dist.get_rank()])
        index = torch.arange(start, start + len(z), device=z.device)  # this rank's rows
        return _supcon(z, labels, contrast, contrast_labels, index, self.temperature,
                       self.base_temperature)


def _gather_sizes(n: int, device: torch.device) -> list[int]:
    size = torch.tensor([n], device=device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s) for s in sizes]


class _GatherRows(torch.autograd.Function):
    """Rows of every process, concatenated in rank order; ranks may hold different counts.

    The gradient of a row is the sum of what every process's loss sends back to it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        padded = x.new_zeros((max(sizes), *x.shape[1:]))  # gloo gathers equal shapes only
        padded[:len(x)] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        ctx.sizes, ctx.rank = sizes, dist.get_rank()
        return torch.cat([part[:n] for part, n in zip(parts, sizes)])  # (sum(sizes), ...)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # every process's loss reaches every row
        start = sum(ctx.sizes[:ctx.rank])
        return grad[start:start + ctx.sizes[ctx.rank]], None


class TwoViewDataset(Dataset):
    """Each item twice through the dataset's own random transform: ((2, C, H, W), label).

    The views are drawn one after the other from torch's global RNG, as the dataset's
    transforms are, so a seeded run (workers=0) repeats exactly."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        first, label = self.dataset[i]
        second, _ = self.dataset[i]
        return torch.stack([first, second]), label  # (2, C, H, W)


def stack_views(images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A two-view batch (B, 2, C, H, W), (B,) -> [views 1; views 2] (2B, C, H, W), (2B,)."""
    b = images.shape[0]
    flat = images.transpose(0, 1).reshape(2 * b, *images.shape[2:])  # (2B, C, H, W)
    return flat, targets.repeat(2)  # (2B,)
