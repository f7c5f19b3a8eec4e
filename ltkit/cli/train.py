"""``ltkit train-backbone``: Phase I."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ltkit import choices
from ltkit.cli import app
from ltkit.cli.common import (
    Debug,
    Device,
    Force,
    Out,
    Quiet,
    Seed,
    TensorBoard,
    Workers,
    emit_path,
    parse_int_list,
    run_stage,
)
from ltkit.cli.helpstyle import DATA, LOSS, MODEL, OPTIMISER, RSG, RUN, SAMPLER, SCL, choice, stage

# Data options.
DataName = Annotated[str, choice("--data", "Data set", choices.DATASETS, panel=DATA)]
Root = Annotated[str | None, typer.Option(
    "--root", help="Data folder (fashion-mnist-lt default: /usr/share/datasets/fashion-mnist).", rich_help_panel=DATA)]
Imbalance = Annotated[float | None, typer.Option(
    "--imbalance", help="Imbalance factor n_max / n_min of an exponential or step profile cut from the training set "
                        "(>= 1; 1 keeps every image). Default: 100 for the -lt data sets and synthetic; 1 for "
                        "imagefolder and list files (your own data is trained on as given).", rich_help_panel=DATA)]
Profile = Annotated[str, choice("--profile", "Long-tail profile", choices.PROFILES, panel=DATA,
                                note="exp: LDAM-DRW's exponential decay; step: two levels.")]
Counts = Annotated[str | None, typer.Option(
    "--counts", help="Explicit per-class training counts, e.g. 4000,2000,...; overrides --imbalance/--profile.",
    rich_help_panel=DATA)]
ValPerClass = Annotated[int | None, typer.Option(
    "--val-per-class", min=0, help="Validation images per class, never trained on (0: none). Default: 20; for "
                                   "imagefolder and list files 10% of each class, at most 20, none from a class of "
                                   "under 6 (said on stderr).", rich_help_panel=DATA)]
BoundPerClass = Annotated[int, typer.Option(
    "--bound-per-class", min=0, help="Balanced 'bound' images per class held out of training like validation, for the "
                                     "classification bound (0: none).", rich_help_panel=DATA)]
Download = Annotated[bool, typer.Option(
    "--download", help="Fetch CIFAR / Fashion-MNIST into --root first (needs the network).", rich_help_panel=DATA)]
TrainList = Annotated[str | None, typer.Option(
    "--train-list", help="imagefolder: list file 'relative/path label' per line (ImageNet-LT format).",
    rich_help_panel=DATA)]
ValList = Annotated[str | None, typer.Option(
    "--val-list", help="imagefolder: the data set's own validation list file.", rich_help_panel=DATA)]
TestList = Annotated[str | None, typer.Option("--test-list", help="imagefolder: test list file.", rich_help_panel=DATA)]
ImageSize = Annotated[int | None, typer.Option(
    "--image-size", help="Image side in pixels (default: the data set's native size; imagefolder: the images' own "
                         "when they share one, else 224; said on stderr).", rich_help_panel=DATA)]
NumClasses = Annotated[int, typer.Option("--num-classes", help="synthetic only: number of classes.",
                                         rich_help_panel=DATA)]
NMax = Annotated[int, typer.Option("--n-max", help="synthetic only: images per class before the long-tail profile.",
                                   rich_help_panel=DATA)]


def make_spec(data: str, root, imbalance, profile, counts, val_per_class, download, train_list,
              val_list, test_list, image_size, num_classes, n_max, bound_per_class=0):
    from ltkit.data import DatasetSpec

    return DatasetSpec(name=data, root=root, imbalance=imbalance, profile=profile,
                       counts=parse_int_list(counts, "--counts"), val_per_class=val_per_class,
                       bound_per_class=bound_per_class,
                       download=download, train_list=train_list, val_list=val_list,
                       test_list=test_list, image_size=image_size, num_classes=num_classes,
                       n_max=n_max)


@stage(app, "train-backbone", example=[
    "ltkit train-backbone --data fashion-mnist-lt --imbalance 100 --epochs 30 -o runs/ce.pt",
    "ltkit train-backbone --loss ldam --drw-epoch 24 --scl-weight 0.1 --rsg -o runs/ldam-scl-rsg.pt"])
def train_backbone_cmd(
    data: DataName = "fashion-mnist-lt",
    root: Root = None,
    imbalance: Imbalance = None,
    profile: Profile = "exp",
    counts: Counts = None,
    val_per_class: ValPerClass = None,
    bound_per_class: BoundPerClass = 0,
    download: Download = False,
    train_list: TrainList = None,
    val_list: ValList = None,
    test_list: TestList = None,
    image_size: ImageSize = None,
    num_classes: NumClasses = 10,
    n_max: NMax = 200,
    arch: Annotated[str, choice("--arch", "Backbone", choices.BACKBONES, panel=MODEL, extra=["timm/NAME"],
                                note="timm/NAME: any timm CNN (pip install 'ltkit[timm]').")] = "resnet32",
    head: Annotated[str, choice("--head", "Classifier head", choices.HEADS, panel=MODEL, extra=["auto"],
                                note="auto: cosine for ldam, else linear.")] = "auto",
    pretrained: Annotated[str | None, typer.Option(
        "--pretrained", help="Local weights file to start a torchvision or timm backbone from (never "
                             "downloaded).", rich_help_panel=MODEL)] = None,
    loss: Annotated[str, choice("--loss", "Loss", choices.LOSSES, panel=LOSS)] = "ce",
    focal_gamma: Annotated[float, typer.Option("--focal-gamma", help="focal: gamma (>= 0).", rich_help_panel=LOSS)
                           ] = 1.0,
    cb_beta: Annotated[float, typer.Option("--cb-beta", help="cb: beta of the effective number, in [0, 1).",
                                           rich_help_panel=LOSS)] = 0.9999,
    ldam_max_m: Annotated[float, typer.Option("--ldam-max-m", help="ldam: margin of the rarest class.",
                                              rich_help_panel=LOSS)] = 0.5,
    ldam_s: Annotated[float, typer.Option("--ldam-s", help="ldam: logit scale.", rich_help_panel=LOSS)] = 30.0,
    la_tau: Annotated[float, typer.Option("--la-tau", help="balanced-softmax / logit-adjust: the prior's weight "
                                                           "(not --tau, the tau-normalisation exponent).",
                                          rich_help_panel=LOSS)] = 1.0,
    drw_epoch: Annotated[int | None, typer.Option(
        "--drw-epoch", help="Deferred re-weighting from this epoch on (0-based; default off).",
        rich_help_panel=LOSS)] = None,
    label_smoothing: Annotated[float, typer.Option(
        "--label-smoothing", help="Label smoothing eps in [0, 1) with any loss (0.1 usual; 0: off).",
        rich_help_panel=LOSS)] = 0.0,
    augment: Annotated[bool, typer.Option(
        "--augment/--no-augment", help="Train-time augmentation (random crop, flip, ...).", rich_help_panel=DATA)
    ] = True,
    augment_policy: Annotated[str, choice("--augment-policy", "Automatic augmentation after crop and flip",
                                          choices.AUGMENT_POLICIES, panel=DATA,
                                          note="autoaugment: the CIFAR-10 policy.")] = "none",
    mixup: Annotated[float, typer.Option(
        "--mixup", help="Mixup on each batch: Beta(ALPHA, ALPHA) mixing weights (0.2 usual; 0: off).",
        rich_help_panel=DATA)] = 0.0,
    cutmix: Annotated[float, typer.Option(
        "--cutmix", help="CutMix on each batch with this ALPHA (1.0 usual; 0: off); with --mixup one of the two "
                         "per batch.", rich_help_panel=DATA)] = 0.0,
    sampler: Annotated[str, choice("--sampler", "Sampler", choices.SAMPLERS, panel=SAMPLER)] = "instance",
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs.", rich_help_panel=OPTIMISER)] = 30,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per step.", rich_help_panel=OPTIMISER)] = 128,
    optimizer: Annotated[str, choice("--optimizer", "Optimiser", choices.OPTIMIZERS, panel=OPTIMISER,
                                     note="adamw: usually --lr 1e-3 --weight-decay 0.05.")] = "sgd",
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate.", rich_help_panel=OPTIMISER)] = 0.1,
    momentum: Annotated[float, typer.Option("--momentum", help="SGD momentum; adamw: beta1.",
                                            rich_help_panel=OPTIMISER)] = 0.9,
    weight_decay: Annotated[float, typer.Option(
        "--weight-decay", help="Weight decay (adamw: decoupled; weight balancing's first stage: 5e-3).",
        rich_help_panel=OPTIMISER)] = 5e-4,
    max_norm: Annotated[float | None, typer.Option(
        "--max-norm", help="MaxNorm: after each step, cap each class's linear-classifier weights at this L2 "
                           "radius (default off).", rich_help_panel=OPTIMISER)] = None,
    schedule: Annotated[str, choice("--schedule", "Learning-rate schedule after warm-up", choices.TRAIN_SCHEDULES,
                                    panel=OPTIMISER)] = "cosine",
    milestones: Annotated[str | None, typer.Option(
        "--milestones", help="step: epochs where the rate drops x0.1 (default 80%,90% of --epochs).",
        rich_help_panel=OPTIMISER)] = None,
    warmup_epochs: Annotated[int, typer.Option("--warmup-epochs", help="Linear warm-up epochs.",
                                               rich_help_panel=OPTIMISER)] = 1,
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="Mixed precision on CUDA (bf16 when supported).",
                                      rich_help_panel=RUN)] = True,
    eval_every: Annotated[int, typer.Option(
        "--eval-every", min=0, help="Report balanced validation accuracy every N epochs (0: only at the end; "
                                    "the test split is measured by ltkit evaluate).", rich_help_panel=RUN)] = 0,
    scl_weight: Annotated[float, typer.Option(
        "--scl-weight", help="Supervised contrastive (SupCon) term of this weight added to the loss, on two views per "
                             "image (0: off).", rich_help_panel=SCL)] = 0.0,
    scl_temperature: Annotated[float, typer.Option("--scl-temperature", help="SCL: SupCon temperature.",
                                                   rich_help_panel=SCL)] = 0.07,
    scl_dim: Annotated[int, typer.Option(
        "--scl-dim", help="SCL: output size of the projection head (training only).", rich_help_panel=SCL)] = 128,
    rsg: Annotated[bool, typer.Option(
        "--rsg/--no-rsg", help="Rare-class sample generator (RSG) during training; not in the checkpoint.",
        rich_help_panel=RSG)] = False,
    rsg_centers: Annotated[int, typer.Option("--rsg-centers", help="RSG: centres per class.", rich_help_panel=RSG)
                           ] = 15,
    rsg_stage: Annotated[int | None, typer.Option(
        "--rsg-stage", help="RSG: the residual stage it follows (default: the second-to-last).", rich_help_panel=RSG)
    ] = None,
    rsg_head_ratio: Annotated[float, typer.Option(
        "--rsg-head-ratio", help="RSG: fraction of classes, most images first, taken as head.", rich_help_panel=RSG)
    ] = 0.2,
    rsg_dim: Annotated[int, typer.Option("--rsg-dim", help="RSG: width of its contrastive module.",
                                         rich_help_panel=RSG)] = 256,
    rsg_strength: Annotated[float, typer.Option(
        "--rsg-strength", help="RSG: transfer strength (generated ~ strength x head samples per batch).",
        rich_help_panel=RSG)] = 1.0,
    rsg_cesc_weight: Annotated[float, typer.Option(
        "--rsg-cesc-weight", help="RSG: weight of the centre-estimation loss.", rich_help_panel=RSG)] = 0.1,
    rsg_mv_weight: Annotated[float, typer.Option(
        "--rsg-mv-weight", help="RSG: weight of the maximized-vector loss.", rich_help_panel=RSG)] = 0.01,
    rsg_epoch: Annotated[int | None, typer.Option(
        "--rsg-epoch", help="RSG: first epoch that generates samples (0-based; default --drw-epoch, else 80% of "
                            "--epochs).", rich_help_panel=RSG)] = None,
    resume: Annotated[bool, typer.Option(
        "--resume/--no-resume", help="Continue an interrupted run of the same options from OUT.partial (default), or "
                                     "start over.", rich_help_panel=RUN)] = True,
    tensorboard: TensorBoard = None,
    seed: Seed = 0,
    device: Device = "auto",
    workers: Workers = 0,
    out: Out = None,
    force: Force = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Phase I: train a backbone and its linear classifier; print the checkpoint's path. Each
    epoch's loss, rate, accuracy and validation accuracy go to OUT.metrics.csv beside it.

    Several processes: torchrun --nproc-per-node N -m ltkit train-backbone ... (DDP; NCCL on
    GPUs, gloo on CPUs; --batch-size is the global batch).

    SCL + RSG + LDAM: --loss ldam --drw-epoch E --scl-weight W --rsg.

    Phase-I recipes (docs/training.md): --mixup / --cutmix, --augment-policy, --label-smoothing,
    --optimizer adamw, weight balancing's first stage: --lr 0.01 --weight-decay 5e-3 [--max-norm R].
    """
    from ltkit.losses import LossOptions
    from ltkit.runoptions import RunOptions
    from ltkit.train import TrainConfig, train_backbone

    def run() -> Path:
        spec = make_spec(data, root, imbalance, profile, counts, val_per_class, download,
                         train_list, val_list, test_list, image_size, num_classes, n_max,
                         bound_per_class)
        loss_options = LossOptions(focal_gamma=focal_gamma, cb_beta=cb_beta, ldam_max_m=ldam_max_m,
                                   ldam_s=ldam_s, la_tau=la_tau, drw_epoch=drw_epoch,
                                   label_smoothing=label_smoothing)
        cfg = TrainConfig(data=spec, arch=arch, head=head, pretrained=pretrained, loss=loss,
                          loss_options=loss_options, augment=augment, augment_policy=augment_policy,
                          mixup=mixup, cutmix=cutmix, sampler=sampler, epochs=epochs,
                          batch_size=batch_size, optimizer=optimizer, lr=lr, momentum=momentum,
                          weight_decay=weight_decay, max_norm=max_norm, schedule=schedule,
                          milestones=parse_int_list(milestones, "--milestones") or [],
                          warmup_epochs=warmup_epochs, seed=seed, amp=amp,
                          scl_weight=scl_weight, scl_temperature=scl_temperature, scl_dim=scl_dim,
                          rsg=rsg, rsg_centers=rsg_centers, rsg_stage=rsg_stage,
                          rsg_head_ratio=rsg_head_ratio, rsg_dim=rsg_dim, rsg_strength=rsg_strength,
                          rsg_cesc_weight=rsg_cesc_weight, rsg_mv_weight=rsg_mv_weight,
                          rsg_epoch=rsg_epoch,
                          run=RunOptions(device=device, workers=workers, eval_every=eval_every,
                                         tensorboard=tensorboard))
        return train_backbone(cfg, out=out, force=force, resume=resume)

    emit_path(run_stage(run, quiet=quiet, debug=debug))
