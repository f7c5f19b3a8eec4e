"""What every backbone is: a feature map, then global average pooling and one layer `fc`.

The contract (timm-style) is what `extract` and CAMs rely on, so no forward hooks are needed:
`forward_features(x)` gives the map right before pooling, `forward_head(fmap)` pools and
classifies, and `fc.weight` (K, C) turns any map into class activation maps.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ltkit import choices
from ltkit.errors import ConfigError
from ltkit.registry import Registry

MODELS: Registry = Registry("backbone", declared=choices.BACKBONES)  # name -> factory(num_classes, in_channels, head)
HEADS: Registry = Registry("head", declared=choices.HEADS)  # name -> factory(in_features, num_classes)


class NormedLinear(nn.Module):
    """Cosine classifier of the LDAM paper: logits = scale * normalize(x) @ normalize(W).T.

    The logits include the scale (30 by default), so a softmax over them is meaningful as
    it is; losses that work on cosines (LDAM) subtract their margin times this scale.
    """

    def __init__(self, in_features: int, out_features: int, scale: float = 30.0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.scale = float(scale)  # multiplies the cosines; a plain value, not learned
        weight = torch.empty(out_features, in_features).uniform_(-1.0, 1.0)  # (K, C)
        self.weight = nn.Parameter(F.normalize(weight, dim=1))  # unit rows, as LDAM's init
        self.register_parameter("bias", None)  # `fc.bias is None`, as nn.Linear(bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cosine = F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).t()  # (B, K)
        return self.scale * cosine

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"scale={self.scale}")


@HEADS.register("linear")
def _linear_head(in_features: int, num_classes: int) -> nn.Module:
    return nn.Linear(in_features, num_classes)


@HEADS.register("cosine")
def _cosine_head(in_features: int, num_classes: int) -> nn.Module:
    return NormedLinear(in_features, num_classes, scale=30.0)


def make_head(head: str, in_features: int, num_classes: int) -> nn.Module:
    """The classifier layer `fc`; an unknown head name raises ConfigError listing the valid ones."""
    return HEADS.get(head)(in_features, num_classes)


class Backbone(nn.Module, abc.ABC):
    """Base of every registered model. Subclasses set `feature_dim` and `fc` and define
    `forward_features`; pooling and classification are shared so every model behaves alike."""

    feature_dim: int  # C, channels of the feature map and width of the pooled feature
    fc: nn.Module  # nn.Linear or NormedLinear, (C) -> (K)

    @abc.abstractmethod
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) images -> (B, C, h, w) map right before global pooling."""

    def forward_head(self, fmap: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = fmap.mean(dim=(2, 3))  # (B, C); works for any memory format
        return pooled if pre_logits else self.fc(pooled)  # (B, C) or (B, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))  # (B, K)

    # Stage by stage, for training-time modules that work inside the network (RSG): running
    # forward_until(x, s) then forward_from(map, s) is forward_features(x), for every s.

    def feature_steps(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """The feature extractor as steps run in order: [stem, residual stage 1, ..., stage S]."""
        raise ConfigError(f"{type(self).__name__} cannot run stage by stage; "
                          "use a ResNet backbone for modules inserted between stages (RSG)")

    @property
    def num_stages(self) -> int:
        """S, the number of residual stages (3 for ResNet-32, 4 for ResNet-18/34/50)."""
        return len(self.feature_steps()) - 1

    def _check_stage(self, stage: int) -> None:
        if not 0 <= stage <= self.num_stages:
            raise ConfigError(f"stage {stage} does not exist: {type(self).__name__} has stages "
                              f"1-{self.num_stages} (0: after the stem)")

    def forward_until(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        """(B, in_channels, H, W) images -> the map after residual stage `stage` (0: the stem's)."""
        self._check_stage(stage)
        for step in self.feature_steps()[:stage + 1]:
            x = step(x)
        return x  # (B, C_stage, H_stage, W_stage)

    def forward_from(self, fmap: torch.Tensor, stage: int) -> torch.Tensor:
        """The map after stage `stage` -> the map right before pooling, (B, C, h, w)."""
        self._check_stage(stage)
        for step in self.feature_steps()[stage + 1:]:
            fmap = step(fmap)
        return fmap
