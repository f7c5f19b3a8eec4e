"""``ltkit train-backbone``: Phase I."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ltkit.cli import app
from ltkit.cli.common import Debug, Device, Force, Out, Quiet, Seed, Workers, emit_path, parse_int_list, run_stage
from ltkit.data import DATASETS, DatasetSpec
from ltkit.losses import LOSSES
from ltkit.models import MODELS
from ltkit.samplers import SAMPLERS

# Data options, shared with `extract` (which may override the checkpoint's data set).
DataName = Annotated[str, typer.Option("--data", help=f"Data set: {', '.join(DATASETS.names())}.")]
Root = Annotated[str | None, typer.Option(
    "--root", help="Data folder (fashion-mnist-lt default: /usr/share/datasets/fashion-mnist).")]
Imbalance = Annotated[float, typer.Option(
    "--imbalance", help="Imbalance factor n_max / n_min (>= 1; 1 = the full balanced set).")]
Profile = Annotated[str, typer.Option("--profile", help="Long-tail profile: exp (LDAM-DRW) or step.")]
Counts = Annotated[str | None, typer.Option(
    "--counts", help="Explicit per-class training counts, e.g. 4000,2000,...; overrides --imbalance/--profile.")]
ValPerClass = Annotated[int, typer.Option(
    "--val-per-class", min=0, help="Validation images per class, never trained on (0: none).")]
BoundPerClass = Annotated[int, typer.Option(
    "--bound-per-class", min=0, help="Balanced 'bound' images per class held out of training like validation, for the "
                                     "classification bound (0: none).")]
Download = Annotated[bool, typer.Option(
    "--download", help="Fetch CIFAR / Fashion-MNIST into --root first (needs the network).")]
TrainList = Annotated[str | None, typer.Option(
    "--train-list", help="imagefolder: list file 'relative/path label' per line (ImageNet-LT format).")]
ValList = Annotated[str | None, typer.Option(
    "--val-list", help="imagefolder: the data set's own validation list file.")]
TestList = Annotated[str | None, typer.Option("--test-list", help="imagefolder: test list file.")]
ImageSize = Annotated[int | None, typer.Option(
    "--image-size", help="Image side in pixels (default: the data set's native size; imagefolder 224).")]
NumClasses = Annotated[int, typer.Option("--num-classes", help="synthetic only: number of classes.")]
NMax = Annotated[int, typer.Option("--n-max", help="synthetic only: images per class before the long-tail profile.")]


def make_spec(data: str, root, imbalance, profile, counts, val_per_class, download, train_list,
              val_list, test_list, image_size, num_classes, n_max, bound_per_class=0) -> DatasetSpec:
    return DatasetSpec(name=data, root=root, imbalance=imbalance, profile=profile,
                       counts=parse_int_list(counts, "--counts"), val_per_class=val_per_class,
                       bound_per_class=bound_per_class,
                       download=download, train_list=train_list, val_list=val_list,
                       test_list=test_list, image_size=image_size, num_classes=num_classes,
                       n_max=n_max)


@app.command("train-backbone")
def train_backbone_cmd(
    data: DataName = "fashion-mnist-lt",
    root: Root = None,
    imbalance: Imbalance = 100.0,
    profile: Profile = "exp",
    counts: Counts = None,
    val_per_class: ValPerClass = 20,
    bound_per_class: BoundPerClass = 0,
    download: Download = False,
    train_list: TrainList = None,
    val_list: ValList = None,
    test_list: TestList = None,
    image_size: ImageSize = None,
    num_classes: NumClasses = 10,
    n_max: NMax = 200,
    arch: Annotated[str, typer.Option(
        "--arch", help=f"Backbone: {', '.join(MODELS.names())}, or timm/NAME (any timm CNN; pip install "
                       "'ltkit[timm]').")] = "resnet32",
    head: Annotated[str, typer.Option(
        "--head", help="Classifier head: linear, cosine, or auto (cosine for ldam).")] = "auto",
    pretrained: Annotated[str | None, typer.Option(
        "--pretrained", help="Local weights file to start a torchvision or timm backbone from (never "
                             "downloaded).")] = None,
    loss: Annotated[str, typer.Option("--loss", help=f"Loss: {', '.join(LOSSES.names())}.")] = "ce",
    focal_gamma: Annotated[float, typer.Option("--focal-gamma", help="focal: gamma (>= 0).")] = 1.0,
    cb_beta: Annotated[float, typer.Option("--cb-beta", help="cb: beta of the effective number, in [0, 1).")] = 0.9999,
    ldam_max_m: Annotated[float, typer.Option("--ldam-max-m", help="ldam: margin of the rarest class.")] = 0.5,
    ldam_s: Annotated[float, typer.Option("--ldam-s", help="ldam: logit scale.")] = 30.0,
    la_tau: Annotated[float, typer.Option("--la-tau", help="balanced-softmax / logit adjustment: tau.")] = 1.0,
    drw_epoch: Annotated[int | None, typer.Option(
        "--drw-epoch", help="Deferred re-weighting from this epoch on (0-based; default off).")] = None,
    augment: Annotated[bool, typer.Option(
        "--augment/--no-augment", help="Train-time augmentation (random crop, flip, ...).")] = True,
    sampler: Annotated[str, typer.Option("--sampler", help=f"Sampler: {', '.join(SAMPLERS.names())}.")] = "instance",
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs.")] = 30,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per step.")] = 128,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (SGD).")] = 0.1,
    momentum: Annotated[float, typer.Option("--momentum", help="SGD momentum.")] = 0.9,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="Weight decay.")] = 5e-4,
    schedule: Annotated[str, typer.Option(
        "--schedule", help="Learning-rate schedule after warm-up: cosine or step.")] = "cosine",
    milestones: Annotated[str | None, typer.Option(
        "--milestones", help="step: epochs where the rate drops x0.1 (default 80%,90% of --epochs).")] = None,
    warmup_epochs: Annotated[int, typer.Option("--warmup-epochs", help="Linear warm-up epochs.")] = 1,
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="Mixed precision on CUDA (bf16 when supported).")] = True,
    eval_every: Annotated[int, typer.Option(
        "--eval-every", min=0, help="Report balanced validation accuracy every N epochs (0: only at the end; "
                                    "the test split is measured by ltkit evaluate).")] = 0,
    scl_weight: Annotated[float, typer.Option(
        "--scl-weight", help="Supervised contrastive (SupCon) term of this weight added to the loss, on two views per "
                             "image (0: off).")] = 0.0,
    scl_temperature: Annotated[float, typer.Option("--scl-temperature", help="SCL: SupCon temperature.")] = 0.07,
    scl_dim: Annotated[int, typer.Option(
        "--scl-dim", help="SCL: output size of the projection head (training only).")] = 128,
    rsg: Annotated[bool, typer.Option(
        "--rsg/--no-rsg", help="Rare-class sample generator (RSG) during training; not in the checkpoint.")] = False,
    rsg_centers: Annotated[int, typer.Option("--rsg-centers", help="RSG: centres per class.")] = 15,
    rsg_stage: Annotated[int | None, typer.Option(
        "--rsg-stage", help="RSG: the residual stage it follows (default: the second-to-last).")] = None,
    rsg_head_ratio: Annotated[float, typer.Option(
        "--rsg-head-ratio", help="RSG: fraction of classes, most images first, taken as head.")] = 0.2,
    rsg_dim: Annotated[int, typer.Option("--rsg-dim", help="RSG: width of its contrastive module.")] = 256,
    rsg_strength: Annotated[float, typer.Option(
        "--rsg-strength", help="RSG: transfer strength (generated ~ strength x head samples per batch).")] = 1.0,
    rsg_cesc_weight: Annotated[float, typer.Option(
        "--rsg-cesc-weight", help="RSG: weight of the centre-estimation loss.")] = 0.1,
    rsg_mv_weight: Annotated[float, typer.Option(
        "--rsg-mv-weight", help="RSG: weight of the maximized-vector loss.")] = 0.01,
    rsg_epoch: Annotated[int | None, typer.Option(
        "--rsg-epoch", help="RSG: first epoch that generates samples (0-based; default --drw-epoch, else 80% of "
                            "--epochs).")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume/--no-resume", help="Continue an interrupted run of the same options from OUT.partial (default), or "
                                     "start over.")] = True,
    seed: Seed = 0,
    device: Device = "auto",
    workers: Workers = 0,
    out: Out = None,
    force: Force = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Phase I: train a backbone and its linear classifier; print the checkpoint's path.

    Several processes: torchrun --nproc-per-node N -m ltkit train-backbone ... (DDP; NCCL on
    GPUs, gloo on CPUs; --batch-size is the global batch).

    SCL + RSG + LDAM: --loss ldam --drw-epoch E --scl-weight W --rsg.
    """
    from ltkit.losses import LossOptions
    from ltkit.runoptions import RunOptions
    from ltkit.train import TrainConfig, train_backbone

    def run() -> Path:
        spec = make_spec(data, root, imbalance, profile, counts, val_per_class, download,
                         train_list, val_list, test_list, image_size, num_classes, n_max,
                         bound_per_class)
        loss_options = LossOptions(focal_gamma=focal_gamma, cb_beta=cb_beta, ldam_max_m=ldam_max_m,
                                   ldam_s=ldam_s, la_tau=la_tau, drw_epoch=drw_epoch)
        cfg = TrainConfig(data=spec, arch=arch, head=head, pretrained=pretrained, loss=loss,
                          loss_options=loss_options, augment=augment, sampler=sampler,
                          epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                          weight_decay=weight_decay, schedule=schedule,
                          milestones=parse_int_list(milestones, "--milestones") or [],
                          warmup_epochs=warmup_epochs, seed=seed, amp=amp,
                          scl_weight=scl_weight, scl_temperature=scl_temperature, scl_dim=scl_dim,
                          rsg=rsg, rsg_centers=rsg_centers, rsg_stage=rsg_stage,
                          rsg_head_ratio=rsg_head_ratio, rsg_dim=rsg_dim, rsg_strength=rsg_strength,
                          rsg_cesc_weight=rsg_cesc_weight, rsg_mv_weight=rsg_mv_weight,
                          rsg_epoch=rsg_epoch,
                          run=RunOptions(device=device, workers=workers, eval_every=eval_every))
        return train_backbone(cfg, out=out, force=force, resume=resume)

    emit_path(run_stage(run, quiet=quiet, debug=debug))
