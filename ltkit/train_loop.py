"""One epoch of Phase-I training, the learning-rate schedule, and the validation-set evaluation.

Plain functions over what `ltkit.train` builds (torchvision references' `train_one_epoch` /
`evaluate`): no files, no resume state.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ltkit.data import Splits
from ltkit.device import autocast
from ltkit.errors import ConfigError
from ltkit.metrics import balanced_accuracy, group_accuracies, per_class_accuracy
from ltkit.scl import SupConLoss, stack_views
from ltkit.training_net import TrainOutput

if TYPE_CHECKING:
    from ltkit.train import TrainConfig

WARMUP_START = 1e-3                 # warm-up begins at this fraction of an epoch's rate (never 0)
DEFAULT_MILESTONES = (0.8, 0.9)     # step schedule without --milestones: these fractions of the epochs
STEP_FACTOR = 0.1                   # step schedule: the rate is multiplied by this at each milestone
LOG_PARTS = ("cls_loss", "scl_loss", "cesc_loss", "mv_loss")  # loss parts in the epoch's log line


def lr_at(cfg: TrainConfig, epoch: float) -> float:
    """Learning rate at a fractional epoch: linear warm-up, then cosine or step decay."""
    if epoch < cfg.warmup_epochs:
        return cfg.lr * (epoch + WARMUP_START) / cfg.warmup_epochs
    if cfg.schedule == "cosine":
        t = (epoch - cfg.warmup_epochs) / max(cfg.epochs - cfg.warmup_epochs, 1e-9)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))
    milestones = cfg.milestones or [int(cfg.epochs * f) for f in DEFAULT_MILESTONES]
    return cfg.lr * STEP_FACTOR ** sum(epoch >= m for m in milestones)


@torch.no_grad()
def predict(model: torch.nn.Module, loader: DataLoader, device: torch.device,
            precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """Predicted class and true label of every image the loader yields."""
    model.eval()
    preds, labels = [], []
    for images, targets in loader:
        with autocast(device, precision):
            logits = model(images.to(device, non_blocking=True))  # (B, K)
        preds.append(logits.argmax(1).cpu())
        labels.append(targets)
    return torch.cat(preds).numpy(), torch.cat(labels).numpy()


def evaluate_model(model: torch.nn.Module, loader: DataLoader, splits: Splits, device: torch.device,
                   precision: str) -> dict[str, Any]:
    """Balanced and plain accuracy, per class and per many / medium / few group."""
    preds, labels = predict(model, loader, device, precision)
    per_class = per_class_accuracy(preds, labels, len(splits.class_names))
    return {"balanced_acc": balanced_accuracy(per_class),
            "accuracy": float((preds == labels).mean()),
            "per_class": [None if np.isnan(a) else float(a) for a in per_class],
            "groups": group_accuracies(per_class, np.asarray(splits.train_counts))}


def training_loss(out: TrainOutput, targets: torch.Tensor, loss_fn, supcon: SupConLoss | None,
                  cfg: TrainConfig, soft: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Classification loss on the images and any generated samples (on `soft` (B, K) targets
    of mixed images when given), plus the weighted SCL and RSG terms; the parts (unweighted,
    detached) for the log."""
    loss = loss_fn(out.logits.float(), out.targets if soft is None else soft)
    parts: dict[str, torch.Tensor] = {}
    if supcon is not None or out.cesc_loss is not None:
        parts["cls_loss"] = loss
    if supcon is not None:
        parts["scl_loss"] = supcon(out.projections, targets)
        loss = loss + cfg.scl_weight * parts["scl_loss"]
    if out.cesc_loss is not None:
        parts["cesc_loss"], parts["mv_loss"] = out.cesc_loss, out.mv_loss
        loss = loss + cfg.rsg_cesc_weight * out.cesc_loss + cfg.rsg_mv_weight * out.mv_loss
    return loss, {k: v.detach() for k, v in parts.items()}


def train_one_epoch(net, loader, loss_fn, optimizer, scaler, cfg: TrainConfig, epoch: int,
                    device: torch.device, tracker, supcon: SupConLoss | None = None,
                    precision: str = "fp32", mixer=None) -> dict[str, float]:
    """One pass over `loader`, the rate set per step by `lr_at`; the epoch's mean loss (and its
    parts), the rate of its last step, accuracy on the real images, its seconds of training,
    and RSG's generated count. `mixer` (mixup / cutmix, `ltkit.recipes`) mixes each batch: the
    loss gets the soft targets, the accuracy counts the largest share of each target as its label."""
    net.train()
    start = time.perf_counter()
    total_loss, correct, seen, steps = 0.0, 0, 0, len(loader)
    part_sums: dict[str, float] = {}
    generated = 0
    for step, (images, targets) in enumerate(loader):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, epoch + step / steps)
        n_images = len(targets)
        images = images.to(device, non_blocking=True)  # (B, C, H, W), or (B, 2, C, H, W) two views
        targets = targets.to(device, non_blocking=True)  # (B,)
        if images.dim() == 5:
            images, targets = stack_views(images, targets)  # (2B, C, H, W), (2B,)
        soft = None
        if mixer is not None:
            images, soft = mixer(images, targets)  # (B, C, H, W) mixed, (B, K) soft targets
            targets = soft.argmax(1)  # (B,) the label of the largest share, for the accuracy
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            out = net(images, targets, epoch)
            loss, parts = training_loss(out, targets, loss_fn, supcon, cfg, soft)
        if not torch.isfinite(loss):
            raise ConfigError(f"the loss became {loss.item()} at epoch {epoch + 1}, step {step}; "
                              "lower --lr or check the data")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total_loss += loss.item() * len(targets)
        for name, value in parts.items():
            part_sums[name] = part_sums.get(name, 0.0) + value.item() * len(targets)
        generated += out.generated
        correct += (out.logits[:len(targets)].argmax(1) == targets).sum().item()  # real images only
        seen += len(targets)
        tracker.advance(n_images, epoch=f"{epoch + 1}/{cfg.epochs}", loss=total_loss / seen,
                        acc=correct / seen, lr=optimizer.param_groups[0]["lr"])
    stats = {"loss": total_loss / seen, "lr": optimizer.param_groups[0]["lr"], "train_acc": correct / seen,
             "epoch_seconds": time.perf_counter() - start}
    stats.update({name: value / seen for name, value in part_sums.items()})
    if cfg.rsg:
        stats["generated"] = generated
    return stats


def epoch_line(epoch: int, epochs: int, stats: dict[str, float]) -> str:
    """The log line of one epoch's `stats`."""
    return (f"epoch {epoch + 1}/{epochs}: loss {stats['loss']:.4f}, train acc {stats['train_acc']:.3f}"
            + "".join(f", {name.removesuffix('_loss')} {stats[name]:.4f}" for name in LOG_PARTS if name in stats)
            + (f", {stats['generated']} generated" if "generated" in stats else "")
            + f", {stats['epoch_seconds']:.1f} s"
            + (f", val balanced acc {stats['val_balanced_acc']:.4f}" if "val_balanced_acc" in stats else ""))


def val_line(metrics: dict[str, Any]) -> str:
    """The log line of the final validation `metrics` (`evaluate_model`'s), or why there are none."""
    if not metrics:
        return "no validation split (--val-per-class 0): the backbone is measured by ltkit evaluate"
    return "val: balanced acc {:.4f}; ".format(metrics["balanced_acc"]) + ", ".join(
        f"{g} {v['accuracy']:.4f} ({v['classes']} classes)" if v["accuracy"] is not None
        else f"{g} empty" for g, v in metrics["groups"].items())
