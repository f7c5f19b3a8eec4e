"""The network `train-backbone` optimises: a backbone plus its training-only parts.

(Beside `ltkit.train`, not under `ltkit.models`: it joins a backbone with the training-only
modules of `ltkit.scl` and `ltkit.rsg`, so `ltkit.models` stays a leaf package.)

The parts are the SCL projection head (`ltkit.scl`) and the RSG module (`ltkit.rsg`). They
live beside the backbone, never inside it, so the checkpoint's `model_state` is the plain
backbone's and every later stage (extract, CAMs) sees an ordinary model; their weights go
only into the resume state (`parts_state`). Without parts, the forward pass is exactly
`backbone(images)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

from ltkit import console
from ltkit.data import Splits
from ltkit.errors import ConfigError
from ltkit.models.base import Backbone
from ltkit.rsg import RSG, head_classes
from ltkit.scl import ProjectionHead

if TYPE_CHECKING:
    from ltkit.train import TrainConfig


class TrainOutput(NamedTuple):
    logits: torch.Tensor  # (N + M, K): the N images of the batch, then M RSG-generated samples
    targets: torch.Tensor  # (N + M,) their labels
    projections: torch.Tensor | None  # (N, D) unit SCL projections of the N images, or None
    cesc_loss: torch.Tensor | None  # () RSG centre-estimation loss, or None without RSG
    mv_loss: torch.Tensor | None  # () RSG maximized-vector loss, or None without RSG
    generated: int  # M


class TrainingNet(nn.Module):
    """`backbone`, with an optional projection head and an optional RSG after `rsg_stage`."""

    def __init__(self, backbone: Backbone, *, projection: ProjectionHead | None = None,
                 rsg: RSG | None = None, rsg_stage: int | None = None):
        super().__init__()
        self.backbone = backbone  # registered first: its parameters come first in the optimiser
        self.projection = projection
        self.rsg = rsg
        if rsg is not None:
            if rsg_stage is None:
                raise ValueError("an RSG module needs the stage it follows")
            backbone._check_stage(rsg_stage)
        self.rsg_stage = rsg_stage

    def forward(self, images: torch.Tensor, targets: torch.Tensor, epoch: int) -> TrainOutput:
        n = len(images)
        cesc = mv = None
        generated = 0
        if self.rsg is None:
            fmap = self.backbone.forward_features(images)  # (N, C, h, w)
        else:
            mid = self.backbone.forward_until(images, self.rsg_stage)  # (N, C_s, H_s, W_s)
            mid, targets, cesc, mv, generated = self.rsg(mid, targets, epoch)  # (N + M, ...)
            fmap = self.backbone.forward_from(mid, self.rsg_stage)  # (N + M, C, h, w)
        pooled = self.backbone.forward_head(fmap, pre_logits=True)  # (N + M, C)
        logits = self.backbone.fc(pooled)  # (N + M, K)
        projections = None if self.projection is None else self.projection(pooled[:n])  # (N, D)
        return TrainOutput(logits, targets, projections, cesc, mv, generated)

    def parts_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """The training-only parts' weights (plain CPU tensors), for the resume state."""
        parts = {"projection": self.projection, "rsg": self.rsg}
        return {name: {k: v.detach().cpu().contiguous() for k, v in part.state_dict().items()}
                for name, part in parts.items() if part is not None}

    def load_parts_state(self, state: dict[str, Any]) -> None:
        for name, part in (("projection", self.projection), ("rsg", self.rsg)):
            if part is not None:
                part.load_state_dict(state[name])


@torch.no_grad()
def stage_channels(backbone: Backbone, stage: int, in_channels: int, image_size: int) -> int:
    """Channels of the map after `stage`, found by running two blank images (eval mode)."""
    was_training = backbone.training
    backbone.eval()
    device = next(backbone.parameters()).device
    probe = torch.zeros(2, in_channels, image_size, image_size, device=device)
    channels = backbone.forward_until(probe, stage).shape[1]
    backbone.train(was_training)
    return int(channels)


def build_training_net(cfg: TrainConfig, model: Backbone, splits: Splits,
                       device: torch.device) -> TrainingNet:
    """The backbone with the training-only parts `cfg` asks for, on `device`."""
    projection = rsg = stage = None
    if cfg.scl_weight > 0:
        projection = ProjectionHead(model.feature_dim, cfg.scl_dim)
    if cfg.rsg:
        stage = model.num_stages - 1 if cfg.rsg_stage is None else cfg.rsg_stage
        if not 1 <= stage <= model.num_stages:
            raise ConfigError(f"--rsg-stage {stage} does not exist: {cfg.arch} has stages "
                              f"1-{model.num_stages}")
        channels = stage_channels(model, stage, splits.in_channels, splits.image_size)
        head = head_classes(splits.train_counts, cfg.rsg_head_ratio)
        rsg = RSG(len(splits.class_names), channels, head, n_centers=cfg.rsg_centers,
                  contrastive_dim=cfg.rsg_dim, strength=cfg.rsg_strength,
                  start_epoch=cfg.rsg_start_epoch())
        console.log(f"rsg: after stage {stage} ({channels} channels), head classes "
                    f"{', '.join(splits.class_names[c] for c in head)}; generating from epoch "
                    f"{cfg.rsg_start_epoch() + 1}")
    return TrainingNet(model, projection=projection, rsg=rsg, rsg_stage=stage).to(device)
