"""CIFAR-style ResNets: 3x3 stem at stride 1, no max-pool, so 32x32 inputs keep 8x8 (ResNet-32)
or 4x4 (ResNet-18/34) maps at the end.

- `resnet32`: the ResNet-32 of the LDAM-DRW code (Cao et al., after He et al.'s CIFAR
  ResNets): 16-32-64 channels, 5 BasicBlocks per stage, option-A shortcuts (stride-2
  subsample + zero-padded channels, no parameters), kaiming_normal init. ~0.46M parameters.
- `resnet18-cifar`, `resnet34-cifar`: the 64-128-256-512 variants used by Kang et al. and
  LDAM follow-ups, with 1x1-conv (option-B) shortcuts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ltkit.models.base import MODELS, Backbone, make_head


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by `stride`, then zero-pad the channels on both sides."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.stride = stride
        self.pad_before = (planes - in_planes) // 2
        self.pad_after = planes - in_planes - self.pad_before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]  # (B, in_planes, H/s, W/s)
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))  # (B, planes, H/s, W/s)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut; `option` "A" pads, "B" projects with a 1x1 conv."""

    def __init__(self, in_planes: int, planes: int, stride: int, option: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            if option == "A":
                self.shortcut = PadShortcut(in_planes, planes, stride)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # (B, planes, H/s, W/s)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(Backbone):
    """3x3 stem (stride 1, no max-pool) and one stage per entry of `widths`; the first stage
    keeps the resolution, each later one halves it."""

    def __init__(self, widths: list[int], depths: list[int], *, option: str, num_classes: int,
                 in_channels: int, head: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages, in_planes = [], widths[0]
        for i, (width, depth) in enumerate(zip(widths, depths)):
            strides = [1 if i == 0 else 2] + [1] * (depth - 1)
            blocks = []
            for stride in strides:
                blocks.append(BasicBlock(in_planes, width, stride, option))
                in_planes = width
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.feature_dim = in_planes
        self.fc = make_head(head, in_planes, num_classes)
        self._init_weights(option)

    def _init_weights(self, option: str) -> None:
        for m in self.modules():
            if option == "A" and isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)  # as LDAM-DRW's resnet_cifar.py (fan_in)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn1(self.conv1(x)))  # (B, widths[0], H, W)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self._stem(x))  # (B, C, H / 2^(stages-1), W / 2^(stages-1))

    def feature_steps(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        return [self._stem, *self.layers]


@MODELS.register("resnet32")
def resnet32(num_classes: int, in_channels: int, head: str) -> CifarResNet:
    return CifarResNet([16, 32, 64], [5, 5, 5], option="A", num_classes=num_classes,
                       in_channels=in_channels, head=head)


@MODELS.register("resnet18-cifar")
def resnet18_cifar(num_classes: int, in_channels: int, head: str) -> CifarResNet:
    return CifarResNet([64, 128, 256, 512], [2, 2, 2, 2], option="B", num_classes=num_classes,
                       in_channels=in_channels, head=head)


@MODELS.register("resnet34-cifar")
def resnet34_cifar(num_classes: int, in_channels: int, head: str) -> CifarResNet:
    return CifarResNet([64, 128, 256, 512], [3, 4, 6, 3], option="B", num_classes=num_classes,
                       in_channels=in_channels, head=head)
