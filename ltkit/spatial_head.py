"""A head that sees the cached feature maps, not only their mean (issue 15).

A linear head on pooled features is bounded by what the mean keeps: measured on
Fashion-MNIST-LT, cRT is already about as good as a linear head trained on balanced
held-out features. `SpatialHead` puts a small stack of conv blocks on the stored (C, H, W)
maps before pooling, so a head trained from the cache can use where things are:

    maps (B, C, H, W) -> [conv 3x3 -> BN -> ReLU] x depth -> global mean -> linear -> (B, K)

With ``depth = 0`` it is the linear head on pooled features (the mean of the map). Blocks are
residual when the width equals the maps' channels, and the last block's BN starts at zero
weight, so a fresh head starts as "pooled features -> linear" and learns only what the maps
add beyond their mean (the ResNet "zero-init last BN" habit of torchvision's references).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ltkit.errors import ConfigError


@dataclass
class SpatialHeadConfig:
    depth: int = 1        # conv blocks before pooling (0: a linear head on the pooled map)
    width: int = 0        # channels of each block (0: the maps' own channels, residual blocks)
    kernel: int = 3       # conv kernel side (odd; 1 makes the blocks per-location MLPs)

    def validate(self) -> None:
        if not 0 <= self.depth <= 8:
            raise ConfigError(f"--head-depth must lie in 0..8 (conv blocks on the maps), got {self.depth}")
        if self.width < 0:
            raise ConfigError(f"--head-width must be >= 0 (0: the maps' own channels), got {self.width}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ConfigError(f"--head-kernel must be an odd number >= 1, got {self.kernel}")


class ConvBlock(nn.Module):
    """conv -> BN -> ReLU, with a skip connection when the shape allows it."""

    def __init__(self, c_in: int, c_out: int, kernel: int, zero_init: bool):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.residual = c_in == c_out
        if zero_init and self.residual:
            nn.init.zeros_(self.bn.weight)  # the block starts as the identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(self.conv(x))  # (B, C_out, H, W)
        return torch.relu(out + x) if self.residual else torch.relu(out)


class SpatialHead(nn.Module):
    """Conv blocks on a (C, H, W) map, global average pooling, one linear layer."""

    def __init__(self, channels: int, num_classes: int, cfg: SpatialHeadConfig):
        super().__init__()
        cfg.validate()
        width = cfg.width or channels
        blocks, c_in = [], channels
        for i in range(cfg.depth):
            blocks.append(ConvBlock(c_in, width, cfg.kernel, zero_init=i == cfg.depth - 1))
            c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c_in, num_classes)
        self.cfg = cfg

    def pooled(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C') the pooled output of the blocks (the head's feature)."""
        return self.blocks(maps).mean((2, 3))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pooled(maps))  # (B, K)
