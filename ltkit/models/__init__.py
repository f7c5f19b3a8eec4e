"""Backbones by name: `create_model("resnet32", num_classes=10, in_channels=1)`.

Every model is a `Backbone`: `forward_features(x) -> (B, C, H, W)`, `forward_head(fmap,
pre_logits=False)`, `forward(x)`, `feature_dim`, and its classifier `fc` (nn.Linear, or
NormedLinear for head="cosine"). A new backbone is one registered factory
`(num_classes, in_channels, head) -> Backbone`; the tests cover every registered name.
Any timm CNN is available as ``timm/<name>`` (`ltkit.models.timm_backbone`).
Training-time modules that work between stages (RSG) use `forward_until(x, stage)` and
`forward_from(fmap, stage)`, built on the backbone's `feature_steps()`.
"""

from __future__ import annotations

from ltkit.errors import ConfigError
from ltkit.models import resnet_cifar, resnet_imagenet  # noqa: F401  (they register themselves)
from ltkit.models.base import HEADS, MODELS, Backbone, NormedLinear, make_head
from ltkit.models.pretrained import load_pretrained
from ltkit.models.timm_backbone import create_timm, is_timm

__all__ = ["MODELS", "HEADS", "Backbone", "NormedLinear", "create_model", "is_timm", "make_head",
           "load_pretrained"]


def create_model(arch: str, num_classes: int, in_channels: int, *, head: str = "linear",
                 pretrained: str | None = None) -> Backbone:
    """Build backbone `arch` with a `head` classifier for `num_classes` classes.

    `pretrained` is a local state-dict file (see `ltkit.models.pretrained`); None trains from
    scratch. Unknown names and impossible sizes raise ConfigError.
    """
    factory = None if is_timm(arch) else MODELS.get(arch)
    HEADS.get(head)  # fail on an unknown head before building anything
    if num_classes < 1:
        raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
    if in_channels not in (1, 3):
        raise ConfigError(f"in_channels must be 1 (grey) or 3 (colour), got {in_channels}")
    if factory is None:  # timm/<name>: timm loads its own local weights file
        return create_timm(arch, num_classes, in_channels, head, pretrained=pretrained)
    model = factory(num_classes, in_channels, head)
    if pretrained is not None:
        load_pretrained(model, pretrained, arch)
    return model
