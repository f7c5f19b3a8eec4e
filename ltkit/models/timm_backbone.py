"""Any timm CNN as an ltkit backbone: ``--arch timm/<name>`` (optional extra ``ltkit[timm]``).

timm's own contract is ltkit's: ``forward_features(x)`` gives the map before pooling. ltkit
builds the model without its classifier and pooling (``num_classes=0, global_pool=""``) and
puts its own head on the map — global average pooling and one layer ``fc`` — so CAMs, the
store and every Phase-II method work unchanged. What timm does after pooling (MobileNetV3's
``conv_head``, for example) is left out: ltkit's head sits right on the map.

Models whose features are not a (C, H, W) map — vision transformers give tokens (B, N, C) —
are refused when built (train-backbone, and extract through the checkpoint): FSA and CAMs
need locations, and reshaping tokens into a grid would silently depend on each model's token
layout (class token, registers). Grey images use timm's ``in_chans=1`` (its stem adaptation).

``--pretrained FILE`` loads local weights offline through timm's ``pretrained_cfg_overlay``
(``dict(file=FILE)``); ltkit never downloads weights.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ltkit.errors import ConfigError
from ltkit.models.base import Backbone, make_head

PREFIX = "timm/"
PROBE_MAX = 224  # side of the one image that finds a model's map shape (its own size, at most this)


def _timm():
    try:
        import timm
    except ImportError:
        raise ConfigError("--arch timm/... needs timm: pip install 'ltkit[timm]' (or pip install timm)") from None
    return timm


class TimmBackbone(Backbone):
    """A timm model's feature extractor (``body``) with ltkit's pooling and ``fc``."""

    def __init__(self, name: str, num_classes: int, in_channels: int, head: str,
                 pretrained: str | None = None):
        super().__init__()
        timm = _timm()
        if name not in timm.list_models():
            close = timm.list_models(f"*{name}*")[:5]
            hint = f" (close: {', '.join(close)})" if close else ""
            raise ConfigError(f"timm has no model {name!r}{hint}; see timm.list_models()")
        extra = {}
        if pretrained is not None:
            if not Path(pretrained).is_file():
                raise ConfigError(f"pretrained weights file {pretrained} does not exist; give a local file "
                                  "(ltkit never downloads weights)")
            extra = {"pretrained": True, "pretrained_cfg_overlay": {"file": str(pretrained)}}
        self.body = timm.create_model(name, num_classes=0, global_pool="", in_chans=in_channels, **extra)
        self.feature_dim = self._map_channels(name, in_channels)
        self.fc = make_head(head, self.feature_dim, num_classes)

    def _map_channels(self, name: str, in_channels: int) -> int:
        """C of the map, from one small forward pass; a model without a (C, H, W) map is refused."""
        cfg = getattr(self.body, "pretrained_cfg", None) or {}
        size = min(PROBE_MAX, max(cfg.get("input_size", (in_channels, PROBE_MAX, PROBE_MAX))[1:]))
        was_training = self.body.training
        self.body.eval()
        try:
            with torch.no_grad():
                fmap = self.body.forward_features(torch.zeros(1, in_channels, size, size))
        except Exception as exc:  # e.g. a ViT that needs its own image size
            raise ConfigError(f"timm/{name} did not run on a {size}x{size} image ({type(exc).__name__}); "
                              "ltkit supports timm CNNs whose forward_features gives a (C, H, W) map") from None
        finally:
            self.body.train(was_training)
        if fmap.dim() != 4:
            raise ConfigError(f"timm/{name} gives features of shape {tuple(fmap.shape)} (tokens, not a (C, H, W) "
                              "map); FSA and CAMs need spatial locations: use a timm CNN (resnet*, "
                              "efficientnet*, convnext*, regnet*, ...)")
        return int(fmap.shape[1])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body.forward_features(x)  # (B, C, h, w)

    def feature_steps(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        return super().feature_steps()  # RSG needs named stages: refused with its message


def is_timm(arch: str) -> bool:
    return arch.startswith(PREFIX)


def create_timm(arch: str, num_classes: int, in_channels: int, head: str,
                pretrained: str | None = None) -> nn.Module:
    return TimmBackbone(arch[len(PREFIX):], num_classes, in_channels, head, pretrained=pretrained)
