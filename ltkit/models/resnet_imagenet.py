"""torchvision's ImageNet ResNets (7x7 stride-2 stem + max-pool), built with weights=None.

The layers keep torchvision's names (conv1, bn1, layer1..layer4, fc), so a state dict saved
from `torchvision.models.resnet50()` loads as it is (see `ltkit.models.pretrained`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision
from torch import nn

from ltkit.models.base import MODELS, Backbone, make_head


class ImageNetResNet(Backbone):
    """A torchvision ResNet split into `forward_features` (up to layer4) and the shared head."""

    def __init__(self, build: Callable[..., torchvision.models.ResNet], *, num_classes: int,
                 in_channels: int, head: str):
        super().__init__()
        net = build(weights=None)
        if in_channels != 3:
            stem = net.conv1
            net.conv1 = nn.Conv2d(in_channels, stem.out_channels, stem.kernel_size,
                                  stride=stem.stride, padding=stem.padding, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1, net.layer2, net.layer3, net.layer4)
        self.feature_dim = net.fc.in_features  # 512 (ResNet-18/34) or 2048 (ResNet-50)
        self.fc = make_head(head, self.feature_dim, num_classes)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self._stem(x)))  # (B, 128 or 512, H/8, W/8)
        return self.layer4(self.layer3(x))  # (B, C, H/32, W/32)

    def feature_steps(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        return [self._stem, self.layer1, self.layer2, self.layer3, self.layer4]


def _register(name: str, build: Callable[..., torchvision.models.ResNet]) -> None:
    def factory(num_classes: int, in_channels: int, head: str) -> ImageNetResNet:
        return ImageNetResNet(build, num_classes=num_classes, in_channels=in_channels, head=head)

    factory.__name__ = name
    MODELS.register(name)(factory)


_register("resnet18", torchvision.models.resnet18)
_register("resnet34", torchvision.models.resnet34)
_register("resnet50", torchvision.models.resnet50)
