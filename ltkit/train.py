"""Phase I: train a backbone and its linear classifier on a long-tailed data set.

The recipe, in order: data -> model -> loss -> sampler -> optimiser + schedule -> resume ->
epoch loop -> checkpoint. Every epoch's randomness (sampler order, augmentation) is drawn
from generators seeded by (seed, epoch), so a run resumed from its last completed epoch ends
with the same weights as an uninterrupted one.

Training-only parts (`ltkit.models.training.TrainingNet`): with `scl_weight > 0` a SupCon
term on a projection of the pooled features of two views per image (`ltkit.scl`); with
`rsg` the rare-class sample generator between two stages (`ltkit.rsg`). Their weights and
optimiser state are in the resume state only: the checkpoint holds the plain backbone. The
SCL + RSG + LDAM system: `loss="ldam", drw_epoch=E, scl_weight=W, rsg=True`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ltkit import console
from ltkit.artifacts import (atomic_output, check_output, earlier_artifact, load_torch_artifact, make_lineage,
                             other_options, partial_path, reuse_existing, versions)
from ltkit.checkpoint import FORMAT, FORMAT_VERSION
from ltkit.data import DatasetSpec, build_splits
from ltkit import distributed, testhooks
from ltkit.device import seed_everything
from ltkit.errors import ArtifactError, ConfigError
from ltkit.losses import LOSSES, make_loss
from ltkit.metrics import balanced_accuracy, group_accuracies, per_class_accuracy
from ltkit.models import HEADS, MODELS, create_model, is_timm
from ltkit.models.training import TrainingNet, TrainOutput, stage_channels
from ltkit.rsg import RSG, head_classes
from ltkit.samplers import SAMPLERS, make_sampler
from ltkit.scl import ProjectionHead, SupConLoss, TwoViewDataset, stack_views

SCHEDULES = ("cosine", "step")


@dataclass
class TrainConfig:
    data: DatasetSpec                      # what to train on (source + long-tail profile)
    arch: str = "resnet32"                 # backbone registry name
    head: str = "auto"                     # linear | cosine; auto: cosine for ldam, else linear
    pretrained: str | None = None          # local state-dict file for torchvision backbones
    loss: str = "ce"                       # loss registry name
    focal_gamma: float = 1.0               # focal loss gamma (>= 0)
    cb_beta: float = 0.9999                # class-balanced loss beta, effective number, [0, 1)
    ldam_max_m: float = 0.5                # LDAM largest margin (of the rarest class)
    ldam_s: float = 30.0                   # LDAM logit scale
    la_tau: float = 1.0                    # logit-adjustment tau (balanced softmax: 1)
    drw_epoch: int | None = None           # deferred re-weighting from this epoch on (None: off)
    augment: bool = True                   # train-time augmentation (crop, flip, ...) of the data set
    sampler: str = "instance"              # sampler registry name
    epochs: int = 30                       # training epochs
    batch_size: int = 128                  # images per step, over all processes under torchrun
    lr: float = 0.1                        # peak learning rate (SGD)
    momentum: float = 0.9                  # SGD momentum
    weight_decay: float = 5e-4             # L2 weight decay
    schedule: str = "cosine"               # cosine | step (x0.1 at each milestone)
    milestones: list[int] = field(default_factory=list)  # step schedule epochs; [] -> 80 %, 90 %
    warmup_epochs: int = 1                 # linear warm-up epochs (LDAM-DRW: 5 of 200)
    seed: int = 0                          # one seed for init, sampler and augmentation
    device: str = "auto"                   # auto | cpu | cuda[:N]
    workers: int = 0                       # DataLoader worker processes
    amp: bool = True                       # mixed precision on CUDA (bf16 when supported)
    eval_every: int = 0                    # test-set evaluation every N epochs (0: at the end)
    # supervised contrastive learning (ltkit.scl): two views per image when on
    scl_weight: float = 0.0                # weight of the SupCon term added to the loss (0: off; ~0.1-1)
    scl_temperature: float = 0.07          # SupCon temperature T > 0 (authors' default; 0.1 also common)
    scl_dim: int = 128                     # projection head output size (MLP C -> C -> dim; not kept)
    # rare-class sample generator (ltkit.rsg), training only: not in the checkpoint
    rsg: bool = False                      # use RSG
    rsg_centers: int = 15                  # centres per class of RSG's centre estimation (>= 1)
    rsg_stage: int | None = None           # residual stage RSG follows (1..S); None: S - 1, as the reference
    rsg_head_ratio: float = 0.2            # fraction of classes, most images first, that RSG treats as head, (0, 1)
    rsg_dim: int = 256                     # width of RSG's contrastive module (>= 1)
    rsg_strength: float = 1.0              # transfer strength > 0: ~strength x head samples generated per batch
    rsg_cesc_weight: float = 0.1           # weight of the centre-estimation loss (>= 0)
    rsg_mv_weight: float = 0.01            # weight of the maximized-vector loss (>= 0)
    rsg_epoch: int | None = None           # first epoch RSG generates samples (0-based); None: drw_epoch, else 80 %

    def validate(self) -> None:
        None if is_timm(self.arch) else MODELS.get(self.arch), LOSSES.get(self.loss), SAMPLERS.get(self.sampler)
        if self.head != "auto":
            HEADS.get(self.head)
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.lr <= 0:
            raise ConfigError("--lr must be positive")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ConfigError(f"--warmup-epochs must lie in [0, epochs={self.epochs}]")
        if self.drw_epoch is not None and not 0 <= self.drw_epoch < self.epochs:
            raise ConfigError(f"--drw-epoch {self.drw_epoch} must lie in [0, epochs={self.epochs})")
        if not (math.isfinite(self.scl_weight) and self.scl_weight >= 0):
            raise ConfigError(f"--scl-weight must be a finite value >= 0, got {self.scl_weight}")
        if self.scl_temperature <= 0 or self.scl_dim < 1:
            raise ConfigError(f"--scl-temperature must be positive and --scl-dim at least 1, got "
                              f"{self.scl_temperature} and {self.scl_dim}")
        if self.rsg:
            self._validate_rsg()

    def _validate_rsg(self) -> None:
        if self.rsg_centers < 1 or self.rsg_dim < 1 or self.rsg_strength <= 0:
            raise ConfigError(f"--rsg-centers and --rsg-dim must be at least 1 and --rsg-strength "
                              f"positive, got {self.rsg_centers}, {self.rsg_dim}, {self.rsg_strength}")
        if not 0.0 < self.rsg_head_ratio < 1.0:
            raise ConfigError(f"--rsg-head-ratio must lie in (0, 1), got {self.rsg_head_ratio}")
        if min(self.rsg_cesc_weight, self.rsg_mv_weight) < 0:
            raise ConfigError("--rsg-cesc-weight and --rsg-mv-weight must be >= 0")
        if self.rsg_epoch is not None and not 0 <= self.rsg_epoch < self.epochs:
            raise ConfigError(f"--rsg-epoch {self.rsg_epoch} must lie in [0, epochs={self.epochs})")

    def rsg_start_epoch(self) -> int:
        """The first epoch RSG generates samples: rsg_epoch, else drw_epoch, else 80 % of epochs
        (the reference starts both at epoch 160 of 200)."""
        if self.rsg_epoch is not None:
            return self.rsg_epoch
        return self.drw_epoch if self.drw_epoch is not None else int(0.8 * self.epochs)

    def resolved_head(self) -> str:
        return ("cosine" if self.loss == "ldam" else "linear") if self.head == "auto" else self.head

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Options that may change between a crash and its resume without changing the result.
_RESUME_FREE = {"device", "workers", "eval_every"}
# Defaults of options added later: an artifact written before them was made with these.
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)
             if f.default is not dataclasses.MISSING}


def lr_at(cfg: TrainConfig, epoch: float) -> float:
    """Learning rate at a fractional epoch: linear warm-up, then cosine or step decay."""
    if epoch < cfg.warmup_epochs:
        return cfg.lr * (epoch + 1e-3) / cfg.warmup_epochs
    if cfg.schedule == "cosine":
        t = (epoch - cfg.warmup_epochs) / max(cfg.epochs - cfg.warmup_epochs, 1e-9)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))
    milestones = cfg.milestones or [int(cfg.epochs * 0.8), int(cfg.epochs * 0.9)]
    return cfg.lr * 0.1 ** sum(epoch >= m for m in milestones)


def _autocast(device: torch.device, enabled: bool):
    if not (enabled and device.type == "cuda"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


@torch.no_grad()
def predict(model: torch.nn.Module, loader: DataLoader, device: torch.device,
            amp: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class and true label of every image the loader yields."""
    model.eval()
    preds, labels = [], []
    for images, targets in loader:
        with _autocast(device, amp):
            logits = model(images.to(device, non_blocking=True))  # (B, K)
        preds.append(logits.argmax(1).cpu())
        labels.append(targets)
    return torch.cat(preds).numpy(), torch.cat(labels).numpy()


def training_loss(out: TrainOutput, targets: torch.Tensor, loss_fn, supcon: SupConLoss | None,
                  cfg: TrainConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Classification loss on the images and any generated samples, plus the weighted SCL and
    RSG terms; the parts (unweighted, detached) for the log."""
    loss = loss_fn(out.logits.float(), out.targets)
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
                    device: torch.device, tracker, supcon: SupConLoss | None = None) -> dict[str, float]:
    net.train()
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
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with _autocast(device, cfg.amp):
            out = net(images, targets, epoch)
            loss, parts = training_loss(out, targets, loss_fn, supcon, cfg)
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
    stats = {"loss": total_loss / seen, "train_acc": correct / seen}
    stats.update({name: value / seen for name, value in part_sums.items()})
    if cfg.rsg:
        stats["generated"] = generated
    return stats


def _evaluate(model, loader, splits, device, amp) -> dict[str, Any]:
    preds, labels = predict(model, loader, device, amp)
    k = len(splits.class_names)
    per_class = per_class_accuracy(preds, labels, k)
    return {"balanced_acc": balanced_accuracy(per_class),
            "accuracy": float((preds == labels).mean()),
            "per_class": [None if np.isnan(a) else float(a) for a in per_class],
            "groups": group_accuracies(per_class, np.asarray(splits.train_counts))}


def _option_diff(ckpt: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """Options (that change the result) on which a checkpoint differs from ``cfg``."""
    saved = {k: v for k, v in ckpt.get("config", {}).items() if k not in _RESUME_FREE}
    wanted = {k: v for k, v in cfg.as_dict().items() if k not in _RESUME_FREE}
    if isinstance(saved.get("data"), dict):  # spec fields added since the checkpoint: their defaults
        saved["data"] = {**dataclasses.asdict(DatasetSpec(name="")), **saved["data"]}
        if wanted["data"]["root"] is None:
            # no --root asks for the source's default folder, which the checkpoint records by name
            saved["data"]["root"] = None
    return sorted(k for k in wanted if saved.get(k, _DEFAULTS.get(k)) != wanted[k])


def _checkpoint_differs(ckpt: dict[str, Any], cfg: TrainConfig) -> str | None:
    if "optimizer" in ckpt:
        return "is an unfinished run's state, not a final checkpoint"
    return other_options(_option_diff(ckpt, cfg))


def _resume_state(partial: Path, cfg: TrainConfig) -> dict[str, Any] | None:
    if not partial.exists():
        return None
    state = load_torch_artifact(partial, FORMAT)
    diff = _option_diff(state, cfg)
    if diff:
        raise ArtifactError(f"{partial} is an interrupted run with other options ({', '.join(diff)}); "
                            "rerun with the same options to resume it, or pass --force to start over")
    return state


def train_backbone(cfg: TrainConfig, out: str | Path, *, force: bool = False,
                   resume: bool = True) -> Path:
    """Train a backbone; write its checkpoint atomically to ``out`` and return the path.

    Under torchrun every process calls this; rank 0 alone logs and writes.
    """
    cfg.validate()
    with distributed.session(cfg.device) as ctx:
        if not ctx.is_main:
            console.configure(quiet=True)
        return _train(cfg, Path(out), ctx, force=force, resume=resume)


def _train(cfg: TrainConfig, out: Path, ctx: distributed.DistContext, *, force: bool,
           resume: bool) -> Path:
    if reuse_existing(out, force, lambda p: _checkpoint_differs(load_torch_artifact(p, FORMAT), cfg)):
        console.log(f"{out} exists with the same options: reusing it (--force to retrain)")
        return out
    partial = partial_path(out)
    if ctx.is_main:
        check_output(out, force, inputs=[cfg.pretrained], replaces=earlier_artifact(FORMAT),
                     kind="backbone checkpoint")
        if force or not resume:
            partial.unlink(missing_ok=True)
    ctx.barrier()
    device = ctx.device
    if cfg.batch_size % ctx.world_size:
        raise ConfigError(f"--batch-size {cfg.batch_size} must divide evenly over "
                          f"{ctx.world_size} processes")

    # 1. data
    splits = build_splits(cfg.data, train_augment=cfg.augment)
    eval_splits = build_splits(cfg.data, train_augment=False)
    k = len(splits.class_names)
    console.log(f"data: {cfg.data.name}, {len(splits.train)} training images in {k} classes "
                f"(largest {max(splits.train_counts)}, smallest {min(splits.train_counts)}), "
                f"{len(splits.test)} test images"
                + (f"; {ctx.world_size} processes" if ctx.active else ""))

    # 2. model, 3. loss, 4. sampler (built before the loader that uses it)
    seed_everything(cfg.seed)
    model = create_model(cfg.arch, k, splits.in_channels, head=cfg.resolved_head(),
                         pretrained=cfg.pretrained)
    if cfg.resolved_head() == "cosine":
        model.fc.scale = cfg.ldam_s  # LDAM subtracts s * margin from logits scaled by s
    if ctx.active:  # BatchNorm statistics over the global batch (before the optimiser sees it)
        model = distributed.convert_batchnorm(model, device)
    model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    loss_fn = make_loss(cfg.loss, splits.train_counts, focal_gamma=cfg.focal_gamma,
                        cb_beta=cfg.cb_beta, ldam_max_m=cfg.ldam_max_m, ldam_s=cfg.ldam_s,
                        la_tau=cfg.la_tau, drw_epoch=cfg.drw_epoch).to(device)
    net = build_training_net(cfg, model, splits, device)
    supcon = SupConLoss(cfg.scl_temperature) if cfg.scl_weight > 0 else None
    sampler = make_sampler(cfg.sampler, splits.train_labels, seed=cfg.seed, epochs=cfg.epochs,
                           rank=ctx.rank, world_size=ctx.world_size)
    pin = device.type == "cuda"
    train_set = TwoViewDataset(splits.train) if supcon is not None else splits.train
    loader = DataLoader(train_set, batch_size=cfg.batch_size // ctx.world_size,
                        sampler=sampler, num_workers=cfg.workers, pin_memory=pin,
                        drop_last=False, persistent_workers=cfg.workers > 0)
    test_loader = DataLoader(eval_splits.test, batch_size=256, num_workers=cfg.workers,
                             pin_memory=pin)

    # 5. optimiser (the schedule is applied per step by lr_at)
    optimizer = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp and device.type == "cuda"
                                  and not torch.cuda.is_bf16_supported())

    # 6. resume
    start_epoch, history = 0, []
    state = _resume_state(partial, cfg) if resume else None
    if state is not None:
        model.load_state_dict(state["model_state"])
        net.load_parts_state(state.get("train_parts", {}))
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, history = state["epoch"], state["history"]
        console.log(f"resuming {partial} after epoch {start_epoch}/{cfg.epochs}")
    replica: torch.nn.Module = net
    if ctx.active:  # one replica per process; RSG leaves parts unused in some epochs
        replica = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                          find_unused_parameters=cfg.rsg)

    def payload(epoch: int, metrics: dict[str, Any], final: bool) -> dict[str, Any]:
        obj = {"format": FORMAT, "format_version": FORMAT_VERSION,
               "model_state": _plain_state(model), "arch": cfg.arch,
               "head": cfg.resolved_head(), "head_scale": getattr(model.fc, "scale", None),
               "num_classes": k, "in_channels": splits.in_channels,
               "class_names": list(splits.class_names),
               "class_counts": [int(c) for c in splits.train_counts],
               "dataset": dataclasses.asdict(cfg.data), "config": cfg.as_dict(),
               "kept_indices": (torch.as_tensor(splits.kept_indices)
                                if splits.kept_indices is not None else None),
               "lineage": make_lineage({}, cfg.as_dict(), cfg.seed), "versions": versions(),
               "metrics": metrics, "epoch": epoch, "history": history,
               "world_size": ctx.world_size}
        if not final:  # the resume state: also the training-only parts (never in the checkpoint)
            obj.update(optimizer=optimizer.state_dict(), scaler=scaler.state_dict(),
                       train_parts=net.parts_state())
        return obj

    # 7. epoch loop
    metrics: dict[str, Any] = {}
    with console.progress((cfg.epochs - start_epoch) * len(sampler), "train", unit="img") as tracker:
        for epoch in range(start_epoch, cfg.epochs):
            torch.manual_seed(cfg.seed * 100_003 + epoch)  # this epoch's augmentation draws
            sampler.set_epoch(epoch)
            loss_fn.set_epoch(epoch)
            t0 = time.perf_counter()
            stats = train_one_epoch(replica, loader, loss_fn, optimizer, scaler, cfg, epoch,
                                    device, tracker, supcon)
            stats["epoch_seconds"] = time.perf_counter() - t0
            line = (f"epoch {epoch + 1}/{cfg.epochs}: loss {stats['loss']:.4f}, "
                    f"train acc {stats['train_acc']:.3f}"
                    + "".join(f", {name.removesuffix('_loss')} {stats[name]:.4f}"
                              for name in ("cls_loss", "scl_loss", "cesc_loss", "mv_loss")
                              if name in stats)
                    + (f", {stats['generated']} generated" if "generated" in stats else "")
                    + f", {stats['epoch_seconds']:.1f} s")
            last = epoch + 1 == cfg.epochs
            if ctx.is_main and (last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0)):
                metrics = _evaluate(model, test_loader, eval_splits, device, cfg.amp)
                stats["test_balanced_acc"] = metrics["balanced_acc"]
                line += f", test balanced acc {metrics['balanced_acc']:.4f}"
            history.append(stats)
            console.log(line)
            if ctx.is_main and not last:  # the resume point, written atomically every epoch
                with atomic_output(partial, suffix=".tmp") as tmp:
                    torch.save(payload(epoch + 1, metrics, final=False), tmp)
                testhooks.pause_at("epoch-end", epoch + 1)
            ctx.barrier()

    # 8. the checkpoint
    if ctx.is_main:
        console.log("test: balanced acc {:.4f}; ".format(metrics["balanced_acc"]) + ", ".join(
            f"{g} {v['accuracy']:.4f} ({v['classes']} classes)" if v["accuracy"] is not None
            else f"{g} empty" for g, v in metrics["groups"].items()))
        with atomic_output(out, suffix=".tmp") as tmp:
            torch.save(payload(cfg.epochs, metrics, final=True), tmp)
        partial.unlink(missing_ok=True)
    ctx.barrier()
    return out


def build_training_net(cfg: TrainConfig, model: torch.nn.Module, splits,
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


def _plain_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights as plain CPU tensors (loadable into an unconverted model)."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
