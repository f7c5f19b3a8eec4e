"""Phase-I representation recipes of `train-backbone`: the optimiser, MaxNorm, mixup / cutmix.

- `OPTIMIZERS`: ``sgd`` (momentum, L2 weight decay coupled to the gradient: the CIFAR-LT
  recipe, lr 0.1 at batch 128) and ``adamw`` (Loshchilov & Hutter: decoupled weight decay;
  ``momentum`` is its beta1, 0.9 as AdamW's own). AdamW's usual settings differ from SGD's
  and are not switched silently: pass them, e.g. ``--lr 1e-3 --weight-decay 0.05``.
- MaxNorm (Alshammari et al., CVPR 2022, "weight balancing"): after every optimiser step each
  class's row of the linear classifier's weight is projected back into the L2 ball of radius
  ``max_norm`` (projected gradient descent), so head classes cannot grow larger weights than
  tail classes. The paper's first stage is CE with a tuned weight decay (5e-3 with SGD lr 0.01,
  cosine, on CIFAR-100-LT); it adds MaxNorm with the class-balanced second stage.
- Mixup (Zhang et al.) and CutMix (Yun et al.) on each training batch, after it reaches the
  device: torchvision's ``transforms.v2.MixUp`` / ``CutMix``, and with both one of the two per
  batch at random, as torchvision's classification references do. Targets become soft (B, K);
  how each loss meets them: `ltkit.losses`. Under torchrun each process mixes its own share
  of the batch. The draws come from torch's global RNG, which `train-backbone` seeds per epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn
from torchvision.transforms import v2

from ltkit import choices
from ltkit.data.transforms import POLICIES
from ltkit.errors import ConfigError
from ltkit.registry import Registry

if TYPE_CHECKING:
    from ltkit.train import TrainConfig

Params = Iterable[nn.Parameter]
OptimizerFactory = Callable[[Params, "TrainConfig"], torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer", declared=choices.OPTIMIZERS)


@OPTIMIZERS.register("sgd")
def _sgd(params: Params, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("adamw")
def _adamw(params: Params, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)


def make_optimizer(cfg: TrainConfig, params: Params, classifier: nn.Module) -> torch.optim.Optimizer:
    """`cfg.optimizer` over `params`; with `cfg.max_norm`, each step ends by projecting the
    class rows of `classifier.weight` into the ball of that radius."""
    optimizer = OPTIMIZERS.get(cfg.optimizer)(params, cfg)
    if cfg.max_norm is not None:
        radius = cfg.max_norm
        optimizer.register_step_post_hook(lambda *_: project_rows(classifier.weight, radius))
    return optimizer


@torch.no_grad()
def project_rows(weight: torch.Tensor, radius: float) -> None:
    """Scale every row of `weight` (K, C) whose L2 norm exceeds `radius` back onto the sphere of
    that radius, in place; rows inside the ball are left as they are."""
    norms = weight.norm(dim=1, keepdim=True)  # (K, 1)
    weight.mul_((radius / norms).clamp(max=1.0))


def make_mixer(cfg: TrainConfig, num_classes: int) -> v2.Transform | None:
    """The batch transform (images (B, C, H, W), labels (B,)) -> (mixed images, soft (B, K)),
    or None when neither mixup nor cutmix is asked for."""
    mixers = ([v2.MixUp(alpha=cfg.mixup, num_classes=num_classes)] if cfg.mixup > 0 else []) + (
        [v2.CutMix(alpha=cfg.cutmix, num_classes=num_classes)] if cfg.cutmix > 0 else [])
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


def recipe_tag(cfg: TrainConfig) -> str:
    """The recipe part of a default checkpoint name, e.g. '-adamw-mixup0.2-randaugment'."""
    from ltkit.train import TrainConfig

    default_wd = TrainConfig.__dataclass_fields__["weight_decay"].default
    parts = [cfg.optimizer if cfg.optimizer != "sgd" else "",
             f"wd{cfg.weight_decay:g}" if cfg.weight_decay != default_wd else "",
             f"maxnorm{cfg.max_norm:g}" if cfg.max_norm is not None else "",
             f"ls{cfg.loss_options.label_smoothing:g}" if cfg.loss_options.label_smoothing else "",
             f"mixup{cfg.mixup:g}" if cfg.mixup else "", f"cutmix{cfg.cutmix:g}" if cfg.cutmix else "",
             cfg.augment_policy if cfg.augment_policy != "none" else ""]
    return "".join(f"-{p}" for p in parts if p)


def validate_recipe(cfg: TrainConfig) -> None:
    """One-line errors for recipe options out of range or that cannot go together."""
    OPTIMIZERS.get(cfg.optimizer), POLICIES.get(cfg.augment_policy)
    if not (math.isfinite(cfg.weight_decay) and cfg.weight_decay >= 0):
        raise ConfigError(f"--weight-decay must be a finite value >= 0, got {cfg.weight_decay}")
    if not 0 <= cfg.momentum < 1:
        raise ConfigError(f"--momentum must lie in [0, 1), got {cfg.momentum} (adamw: it is beta1)")
    if not 0 <= cfg.loss_options.label_smoothing < 1:
        raise ConfigError(f"--label-smoothing must lie in [0, 1), got {cfg.loss_options.label_smoothing}; 0.1 is usual")
    for name in ("mixup", "cutmix"):
        alpha = getattr(cfg, name)
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ConfigError(f"--{name} is a Beta(alpha, alpha) parameter: a finite value >= 0 (0: off), got {alpha}")
    if (cfg.mixup or cfg.cutmix) and (cfg.scl_weight > 0 or cfg.rsg):
        raise ConfigError("--mixup / --cutmix give mixed images no single label, which SCL and RSG need: "
                          "drop --scl-weight / --rsg or the mixing")
    if cfg.augment_policy != "none" and not cfg.augment:
        raise ConfigError(f"--augment-policy {cfg.augment_policy} adds to the train-time augmentation: "
                          "drop --no-augment")
    if cfg.max_norm is not None:
        if not (math.isfinite(cfg.max_norm) and cfg.max_norm > 0):
            raise ConfigError(f"--max-norm is a radius: a finite value > 0, got {cfg.max_norm}")
        if cfg.resolved_head() != "linear":
            raise ConfigError("--max-norm bounds a linear head's class weights; the cosine head normalises "
                              "them already: drop --max-norm or use --head linear")
