"""A head that sees the cached feature maps, not only their mean (issue 15).

A linear head on pooled features is bounded by what the mean keeps: measured on
Fashion-MNIST-LT, cRT is already about as good as a linear head trained on balanced
held-out features. `SpatialHead` puts a small stack of conv blocks on the stored (C, H, W)
maps before pooling, so a head trained from the cache can use where things are:

    maps (B, C, H, W) -> [conv kxk -> BN -> ReLU] x depth -> global mean -> final layer -> (B, K)

The final layer is a `ltkit.classifiers.Classifier` (linear, or LWS: the Phase-II methods
act on it as on a pooled head). With ``depth = 0`` the head is that classifier on the pooled
map. Blocks are residual when the width equals the maps' channels, and the last block's BN
starts at zero weight, so a fresh one-block head on post-ReLU maps starts as "pooled features
-> final layer" and learns only what the maps add beyond their mean (the ResNet "zero-init
last BN" habit of torchvision's references; every block zero-initialised scored lower on val,
docs/phase2.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ltkit.choices import SPATIAL_BLOCKS, SPATIAL_FRESH
from ltkit.classifiers import Classifier
from ltkit.errors import ConfigError
from ltkit.registry import Registry

# a head with a fresh final layer (crt's), chosen on the bound split (ltkit.choices)
DEPTH, WIDTH, BLOCK = SPATIAL_FRESH["depth"], SPATIAL_FRESH["width"], SPATIAL_FRESH["block"]
BLOCKS: Registry[type[nn.Module]] = Registry("head block", declared=SPATIAL_BLOCKS)
BLOCK_BEFORE = "conv"  # the blocks of a head saved before --head-block existed


@dataclass
class SpatialHeadConfig:
    depth: int = DEPTH    # conv blocks before pooling (0: the final layer on the pooled map)
    width: int = WIDTH    # channels of each block (0: the maps' own channels, residual blocks)
    kernel: int = 3       # conv kernel side (odd; 1 makes the blocks per-location MLPs)
    block: str = BLOCK    # a name of BLOCKS: conv (a full kxk conv) | separable (depthwise kxk, then 1x1)

    def validate(self) -> None:
        BLOCKS.get(self.block)
        if not 0 <= self.depth <= 8:
            raise ConfigError(f"--head-depth must lie in 0..8 (conv blocks on the maps), got {self.depth}")
        if self.width < 0:
            raise ConfigError(f"--head-width must be >= 0 (0: the maps' own channels), got {self.width}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ConfigError(f"--head-kernel must be an odd number >= 1, got {self.kernel}")

    def out_channels(self, channels: int) -> int:
        """Channels the final layer sees: the blocks' width, or the maps' own without blocks."""
        return (self.width or channels) if self.depth else channels


@BLOCKS.register("conv")
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
        out = self.bn(self.mix(x))  # (B, C_out, H, W)
        return torch.relu(out + x) if self.residual else torch.relu(out)

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def convs(self) -> list[nn.Conv2d]:
        return [self.conv]


@BLOCKS.register("separable")
class SeparableBlock(ConvBlock):
    """depthwise kxk conv -> 1x1 conv -> BN -> ReLU (MobileNet's depthwise-separable block):
    the 1x1 mixes channels, the depthwise conv neighbours, in about a ninth of a full 3x3
    conv's multiply-adds."""

    def __init__(self, c_in: int, c_out: int, kernel: int, zero_init: bool):
        super().__init__(c_in, c_out, 1, zero_init)  # self.conv: the 1x1
        self.depthwise = nn.Conv2d(c_in, c_in, kernel, padding=kernel // 2, groups=c_in, bias=False)

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.depthwise(x))

    def convs(self) -> list[nn.Conv2d]:
        return [self.depthwise, self.conv]


class SpatialHead(nn.Module):
    """Conv blocks on a (C, H, W) map, global average pooling, one final `Classifier`."""

    head = "spatial"  # its kind in ltkit.heads.HEADS
    kind = "spatial"  # what evaluations call it (post-hoc tau-normalisation does not apply)

    def __init__(self, channels: int, num_classes: int, cfg: SpatialHeadConfig,
                 final: Classifier | None = None, generator: torch.Generator | None = None):
        super().__init__()
        cfg.validate()
        width = cfg.width or channels
        blocks, c_in = [], channels
        for i in range(cfg.depth):
            blocks.append(BLOCKS.get(cfg.block)(c_in, width, cfg.kernel, zero_init=i == cfg.depth - 1))
            c_in = width
        self.blocks = nn.Sequential(*blocks)
        if generator is not None:  # the run's seed, not torch's global one, draws the convs
            for conv in (conv for block in blocks for conv in block.convs()):
                nn.init.kaiming_uniform_(conv.weight, a=5 ** 0.5, generator=generator)
        if final is None:
            linear = nn.Linear(c_in, num_classes)
            final = Classifier("linear", linear.weight, linear.bias)
        if final.feature_dim != c_in or final.num_classes != num_classes:
            raise ConfigError(f"a final layer of {final.feature_dim} -> {final.num_classes} does not fit "
                              f"blocks of {c_in} channels and {num_classes} classes")
        self.fc, self.cfg, self.channels = final, cfg, channels

    @property
    def num_classes(self) -> int:
        return self.fc.num_classes

    @property
    def feature_dim(self) -> int:
        return self.channels  # what it reads: maps of this many channels

    def pooled(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C') the pooled output of the blocks (the final layer's input).
        A sum, then divided: the mean's backward writes a (B, C', H, W) gradient in the default
        layout, which the blocks' channels-last ReLU then reads across strides (a third of a
        one-block head's step on the CPU); the sum's is a broadcast view."""
        out = self.blocks(maps.float())  # (B, C', H, W)
        return out.sum((2, 3)) / (out.shape[2] * out.shape[3])

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pooled(maps))  # (B, K)

    def head_state(self) -> dict[str, Any]:
        """What a classifier artifact keeps beside the final layer's state."""
        return {"kind": self.head, "config": dataclasses.asdict(self.cfg), "channels": self.channels,
                "blocks": {k: v.detach().cpu() for k, v in self.blocks.state_dict().items()}}

    @classmethod
    def from_head_state(cls, final: Classifier, state: dict[str, Any]) -> SpatialHead:
        config = {"block": BLOCK_BEFORE} | state["config"]  # an artifact of before: full conv blocks
        head = cls(int(state["channels"]), final.num_classes, SpatialHeadConfig(**config), final)
        head.blocks.load_state_dict(state["blocks"])  # strict: a missing or extra tensor is refused
        return head
