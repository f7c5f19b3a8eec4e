"""Phase I: train a backbone and its linear classifier on a long-tailed data set.

`train_backbone(cfg)` reads as a recipe: data -> model, loss and training-only parts ->
sampler and loaders -> optimiser -> resume -> epoch loop -> checkpoint. Every epoch's
randomness (sampler order, augmentation) is drawn from generators seeded by (seed, epoch), so
a run resumed from its last completed epoch ends with the same weights as an uninterrupted
one. One epoch, the schedule and the evaluation: `ltkit.train_loop`; what is written and how
a rerun is recognised: `ltkit.train_state`.

Training-only parts (`ltkit.training_net.TrainingNet`): with `scl_weight > 0` a SupCon term on
a projection of the pooled features of two views per image (`ltkit.scl`); with `rsg` the
rare-class sample generator between two stages (`ltkit.rsg`). Their weights and optimiser
state are in the resume state only: the checkpoint holds the plain backbone. The SCL + RSG +
LDAM system: `loss="ldam", loss_options=LossOptions(drw_epoch=E), scl_weight=W, rsg=True`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from ltkit import choices, console, distributed, testhooks
from ltkit.artifacts import atomic_output, check_output, earlier_artifact, partial_path, reuse_existing
from ltkit.checkpoint import FORMAT
from ltkit.data import DatasetSpec, Splits, build_splits, chosen_spec, data_fingerprint
from ltkit.device import resolve_precision, seed_everything
from ltkit.errors import ConfigError
from ltkit.losses import LOSSES, LossOptions, make_loss
from ltkit.models import HEADS, MODELS, Backbone, create_model, is_timm
from ltkit.recipes import make_mixer, make_optimizer, recipe_tag, validate_recipe
from ltkit.runlog import check_log, val_columns
from ltkit.runoptions import RunOptions
from ltkit.samplers import SAMPLERS, make_sampler
from ltkit.scl import SupConLoss, TwoViewDataset
from ltkit.train_loop import epoch_line, evaluate_model, lr_at, train_one_epoch, val_line
from ltkit.train_state import checkpoint, checkpoint_differs, load_resume_state, open_run_log, restore, training_state
from ltkit.training_net import build_training_net

__all__ = ["TrainConfig", "default_out", "lr_at", "train_backbone"]

SCHEDULES = choices.TRAIN_SCHEDULES
EPOCH_SEED_STRIDE = 100_003  # epoch e of seed s draws its augmentation from s * STRIDE + e (prime)
EVAL_BATCH_SIZE = 256        # validation images per batch (no gradients: larger than training's)
RSG_START_FRACTION = 0.8     # RSG with neither rsg_epoch nor drw_epoch starts here (reference: 160 of 200)


@dataclass
class TrainConfig:
    data: DatasetSpec                      # what to train on (source + long-tail profile)
    arch: str = "resnet32"                 # backbone registry name
    head: str = "auto"                     # linear | cosine; auto: cosine for ldam, else linear
    pretrained: str | None = None          # local state-dict file for torchvision backbones
    loss: str = "ce"                       # loss registry name
    loss_options: LossOptions = field(default_factory=LossOptions)  # the loss's own options (ltkit.losses)
    augment: bool = True                   # train-time augmentation (crop, flip, ...) of the data set
    augment_policy: str = "none"           # + randaugment | trivialaugment | autoaugment[-imagenet] (ltkit.data)
    mixup: float = 0.0                     # MixUp Beta(alpha, alpha) per batch, soft targets (0: off; 0.2 usual)
    cutmix: float = 0.0                    # CutMix alpha (0: off; 1.0 usual); with mixup: one of them per batch
    sampler: str = "instance"              # sampler registry name
    epochs: int = 30                       # training epochs
    batch_size: int = 128                  # images per step, over all processes under torchrun
    optimizer: str = "sgd"                 # sgd | adamw (ltkit.recipes; adamw usually lr 1e-3, wd 0.05)
    lr: float = 0.1                        # peak learning rate
    momentum: float = 0.9                  # SGD momentum; AdamW's beta1
    weight_decay: float = 5e-4             # weight decay (SGD: L2 in the gradient; AdamW: decoupled)
    max_norm: float | None = None          # MaxNorm: L2 radius of each class's classifier row (None: off)
    schedule: str = "cosine"               # cosine | step (x0.1 at each milestone)
    milestones: list[int] = field(default_factory=list)  # step schedule epochs; [] -> 80 %, 90 %
    warmup_epochs: int = 1                 # linear warm-up epochs (LDAM-DRW: 5 of 200)
    seed: int = 0                          # one seed for init, sampler and augmentation
    amp: bool = True                       # mixed precision on CUDA (bf16 when supported)
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
    # how it runs (device, workers, eval_every): free to change between a crash and its resume
    run: RunOptions = field(default_factory=RunOptions)

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
        drw_epoch = self.loss_options.drw_epoch
        if drw_epoch is not None and not 0 <= drw_epoch < self.epochs:
            raise ConfigError(f"--drw-epoch {drw_epoch} must lie in [0, epochs={self.epochs})")
        if not (math.isfinite(self.scl_weight) and self.scl_weight >= 0):
            raise ConfigError(f"--scl-weight must be a finite value >= 0, got {self.scl_weight}")
        if self.scl_temperature <= 0 or self.scl_dim < 1:
            raise ConfigError(f"--scl-temperature must be positive and --scl-dim at least 1, got "
                              f"{self.scl_temperature} and {self.scl_dim}")
        if self.rsg:
            self._validate_rsg()
        validate_recipe(self)
        self.run.validate()

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
        drw_epoch = self.loss_options.drw_epoch
        return drw_epoch if drw_epoch is not None else int(RSG_START_FRACTION * self.epochs)

    def resolved_head(self) -> str:
        return ("cosine" if self.loss == "ldam" else "linear") if self.head == "auto" else self.head

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_out(cfg: TrainConfig) -> Path:
    """Where a checkpoint goes without ``out``: runs/<data>-<profile>/backbone-<arch>-<loss>...pt."""
    tag = f"if{cfg.data.imbalance:g}" if cfg.data.counts is None else "counts"
    extras = ("-scl" if cfg.scl_weight > 0 else "") + ("-rsg" if cfg.rsg else "") + recipe_tag(cfg)
    return Path("runs") / f"{cfg.data.name}-{tag}" / f"backbone-{cfg.arch}-{cfg.loss}{extras}-s{cfg.seed}.pt"


def train_backbone(cfg: TrainConfig, *, out: str | Path | None = None, force: bool = False,
                   resume: bool = True) -> Path:
    """Train a backbone; write its checkpoint atomically to ``out`` (default: `default_out`)
    and return the path. A checkpoint there of the same options and data is reused; another
    needs ``force``. An interrupted run of the same options resumes unless ``resume=False``.

    Under torchrun every process calls this; rank 0 alone logs and writes.
    """
    cfg.validate()
    with distributed.session(cfg.run.device) as ctx:
        if not ctx.is_main:
            console.configure(quiet=True)
        if cfg.batch_size % ctx.world_size:
            raise ConfigError(f"--batch-size {cfg.batch_size} must divide evenly over "
                              f"{ctx.world_size} processes")
        return _train(cfg, Path(out) if out is not None else default_out(cfg), ctx,
                      force=force, resume=resume)


def _train(cfg: TrainConfig, out: Path, ctx: distributed.DistContext, *, force: bool,
           resume: bool) -> Path:
    # 1. data, and its fingerprint: a rerun reuses `out` only for the same options and data
    splits = build_splits(cfg.data, train_augment=cfg.augment, policy=cfg.augment_policy)
    cfg = dataclasses.replace(cfg, data=chosen_spec(cfg.data, splits))  # defaults taken: said, recorded
    eval_splits = build_splits(cfg.data, train_augment=False)
    fingerprint = data_fingerprint(eval_splits)
    if reuse_existing(out, force, lambda p: checkpoint_differs(p, cfg, fingerprint)):
        console.log(f"{out} exists with the same options and data: reusing it (--force to retrain)")
        return out
    partial = _claim_output(cfg, out, ctx, force=force, restart=force or not resume)
    _log_data(cfg, splits, ctx)

    # 2. model, loss and the training-only parts
    device, precision = ctx.device, resolve_precision("auto" if cfg.amp else "fp32", ctx.device)
    model = _build_model(cfg, splits, ctx)
    loss_fn = make_loss(cfg.loss, splits.train_counts, **dataclasses.asdict(cfg.loss_options)).to(device)
    net = build_training_net(cfg, model, splits, device)
    supcon = SupConLoss(cfg.scl_temperature) if cfg.scl_weight > 0 else None

    # 3. the sampler, then the loaders that use it
    sampler = make_sampler(cfg.sampler, splits.train_labels, seed=cfg.seed, epochs=cfg.epochs,
                           rank=ctx.rank, world_size=ctx.world_size)
    loader, val_loader = _loaders(cfg, splits, eval_splits, sampler, ctx, two_views=supcon is not None)
    mixer = make_mixer(cfg, len(splits.class_names))  # mixup / cutmix on each batch, or None

    # 4. optimiser (the schedule is applied per step by lr_at); loss scaling for fp16 only
    optimizer = make_optimizer(cfg, net.parameters(), classifier=model.fc)  # MaxNorm after each step
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    # 5. resume from the last completed epoch of this very run
    state = load_resume_state(partial, cfg, fingerprint) if resume else None
    start_epoch, history = restore(state, partial, cfg, model, net, optimizer, scaler)
    replica = distributed.replicate(net, ctx, find_unused=cfg.rsg)  # RSG sits out some epochs
    snapshot = functools.partial(checkpoint, cfg, model, splits, fingerprint, ctx.world_size)

    # 6. epoch loop, a row of OUT.metrics.csv each; the resume state is written after every epoch but the last
    metrics: dict[str, Any] = {}
    with console.progress((cfg.epochs - start_epoch) * len(sampler), "train", unit="img") as tracker, \
            open_run_log(cfg, out, history, ctx.is_main) as log:
        for epoch in range(start_epoch, cfg.epochs):
            started = time.perf_counter()
            torch.manual_seed(cfg.seed * EPOCH_SEED_STRIDE + epoch)  # this epoch's augmentation draws
            sampler.set_epoch(epoch)
            loss_fn.set_epoch(epoch)
            stats = {"epoch": epoch + 1} | train_one_epoch(replica, loader, loss_fn, optimizer, scaler, cfg,
                                                           epoch, device, tracker, supcon, precision, mixer)
            last = epoch + 1 == cfg.epochs
            due = last or (cfg.run.eval_every and (epoch + 1) % cfg.run.eval_every == 0)
            if ctx.is_main and due and val_loader is not None:  # validation only: test is evaluate's
                metrics = evaluate_model(model, val_loader, eval_splits, device, precision)
                stats |= val_columns(metrics)
            stats["seconds"] = time.perf_counter() - started
            history.append(stats)
            console.log(epoch_line(epoch, cfg.epochs, stats))
            if log is not None:
                log.write(stats)
            if ctx.is_main and not last:
                _save(partial, snapshot(epoch + 1, metrics, history) | training_state(optimizer, scaler, net))
                testhooks.pause_at("epoch-end", epoch + 1)
            ctx.barrier()

    if ctx.is_main:  # 7. the checkpoint: the plain backbone, no optimiser or training-only parts
        console.log(val_line(metrics))
        _save(out, snapshot(cfg.epochs, metrics, history))
        partial.unlink(missing_ok=True)
    ctx.barrier()
    return out


def _claim_output(cfg: TrainConfig, out: Path, ctx: distributed.DistContext, *, force: bool,
                  restart: bool) -> Path:
    """Check `out` (never an input; replaced with `force` only when it is an earlier
    checkpoint) and make its folder (rank 0; the others wait); drop an old resume state on
    `restart`."""
    partial = partial_path(out)
    if ctx.is_main:
        check_output(out, force, inputs=[cfg.pretrained], replaces=earlier_artifact(FORMAT),
                     kind="backbone checkpoint")
        check_log(out, inputs=[cfg.pretrained])  # the run log beside it: an earlier log, or none
        if restart:
            partial.unlink(missing_ok=True)
    ctx.barrier()
    return partial


def _log_data(cfg: TrainConfig, splits: Splits, ctx: distributed.DistContext) -> None:
    console.log(f"data: {cfg.data.name}, {len(splits.train)} training images in {len(splits.class_names)} "
                f"classes (largest {max(splits.train_counts)}, smallest {min(splits.train_counts)}), "
                f"{len(splits.test)} test images" + (f"; {ctx.world_size} processes" if ctx.active else ""))


def _build_model(cfg: TrainConfig, splits: Splits, ctx: distributed.DistContext) -> Backbone:
    seed_everything(cfg.seed)
    model = create_model(cfg.arch, len(splits.class_names), splits.in_channels,
                         head=cfg.resolved_head(), pretrained=cfg.pretrained)
    if cfg.resolved_head() == "cosine":
        model.fc.scale = cfg.loss_options.ldam_s  # LDAM subtracts s * margin from logits scaled by s
    if ctx.active:  # BatchNorm statistics over the global batch (before the optimiser sees it)
        model = distributed.convert_batchnorm(model, ctx.device)
    model.to(ctx.device)
    if ctx.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def _loaders(cfg: TrainConfig, splits: Splits, eval_splits: Splits, sampler: Sampler,
             ctx: distributed.DistContext, *, two_views: bool) -> tuple[DataLoader, DataLoader]:
    """The training loader (this process's share of each batch, in `sampler`'s order; two
    views per image for SCL) and the validation loader (None without a validation split): the
    test split is measured once, by `ltkit evaluate`, never during training."""
    pin, workers = ctx.device.type == "cuda", cfg.run.workers
    train_set = TwoViewDataset(splits.train) if two_views else splits.train
    loader = DataLoader(train_set, batch_size=cfg.batch_size // ctx.world_size, sampler=sampler,
                        num_workers=workers, pin_memory=pin, drop_last=False,
                        persistent_workers=workers > 0)
    val_loader = None if eval_splits.val is None else DataLoader(
        eval_splits.val, batch_size=EVAL_BATCH_SIZE, num_workers=workers, pin_memory=pin)
    return loader, val_loader


def _save(path: Path, obj: dict[str, Any]) -> None:
    with atomic_output(path, suffix=".tmp") as tmp:
        torch.save(obj, tmp)
