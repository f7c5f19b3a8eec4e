"""``ltkit augment-finetune``: Phase II, a classifier fine-tuned or re-balanced from the cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ltkit import choices
from ltkit.choices import AUTO, DRAW
from ltkit.cli import app
from ltkit.cli.common import (
    TAU_HELP,
    Debug,
    Device,
    Force,
    Out,
    Quiet,
    Seed,
    TensorBoard,
    emit_path,
    parse_tau,
    run_stage,
)
from ltkit.cli.helpstyle import BATCHES, INPUT, METHOD, OPTIMISER, RUN, choice, completer, stage
from ltkit.errors import ConfigError


def _finetune_tau(text: str | None) -> float | None:
    """FinetuneConfig's tau: an exponent, or None for auto (chosen on the validation split)."""
    value = parse_tau(text)
    return None if value in (None, "auto") else value


def parse_auto(text: str, option: str) -> float | str:
    """--tau-s and the like: a number, or auto (kept as the word)."""
    if text == AUTO:
        return text
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{option} must be a number or auto, got {text!r}") from None


def parse_method_options(pairs: list[str]) -> dict[str, Any]:
    """--method-option NAME=VALUE, repeated -> {NAME: VALUE} (numbers as numbers)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"--method-option takes NAME=VALUE, got {pair!r}")
        try:
            out[name] = int(text) if text.lstrip("-").isdigit() else float(text)
        except ValueError:
            out[name] = text
    return out


@stage(app, "augment-finetune", example=[
    "ltkit augment-finetune runs/ce.table.pt                      # FSA (the default) on the linear head",
    "ltkit augment-finetune runs/ce.h5 --classifier tau-norm --tau auto"])
def augment_finetune_cmd(
    source: Annotated[str, typer.Argument(help="Confusing-class table, or a feature store (its table is built with "
                                               "the defaults), or - to read the path from stdin.")],
    store: Annotated[Path | None, typer.Option("--store", help="The table's store, when it moved or changed since the "
                                                               "table was built.", rich_help_panel=INPUT)] = None,
    classifier: Annotated[str, choice("--classifier", "Classifier method", choices.CLASSIFIERS, panel=METHOD)
                          ] = "linear",
    augment: Annotated[str, choice("--augment", "Batches", choices.AUGMENTERS, panel=METHOD, extra=["auto"],
                                   note="auto: fsa for linear, class-balanced for crt/lws, instance for "
                                        "la-loss/wb/disalign, none for the training-free methods.")
                       ] = "auto",
    margin: Annotated[float, typer.Option("--margin", help="cloud: additive angular margin (radians).",
                                          rich_help_panel=METHOD)] = 0.2,
    scale: Annotated[float, typer.Option("--scale", help="cloud: cosine logit scale (a cosine Phase-I head keeps its "
                                                         "own).", rich_help_panel=METHOD)] = 16.0,
    tau: Annotated[str | None, typer.Option("--tau", help=f"tau-norm: {TAU_HELP}", rich_help_panel=METHOD,
                                            autocompletion=completer(["auto"]))] = None,
    ncm_metric: Annotated[str, choice("--ncm-metric", "ncm: distance", choices.NCM_METRICS, panel=METHOD)
                          ] = "cosine",
    method_option: Annotated[list[str] | None, typer.Option("--method-option", help="NAME=VALUE: an option of the "
                                                                                    "chosen classifier method itself "
                                                                                    "(repeat for several).",
                                                            rich_help_panel=METHOD)] = None,
    head: Annotated[str, choice("--head", "Head kind", choices.FINETUNE_HEADS, panel=METHOD,
                                note="linear: on pooled features; spatial: conv blocks on the stored maps, then "
                                     "pool + final layer (crt, linear, lws; --augment class-balanced, none, or fsa "
                                     "on maps).")] = "linear",
    head_depth: Annotated[int | None, typer.Option(
        "--head-depth", help=f"spatial: blocks on the maps (0..8). Default: {choices.SPATIAL_FRESH['depth']} for "
                             f"crt (a fresh final layer; chosen on the bound split), "
                             f"{choices.SPATIAL_PHASE1['depth']} for linear / lws (chosen on val).",
        rich_help_panel=METHOD)] = None,
    head_width: Annotated[int | None, typer.Option(
        "--head-width", help=f"spatial: their channels (0: the maps' own, residual). Default: "
                             f"{choices.SPATIAL_FRESH['width']} for crt (chosen on the bound split), 0 "
                             "for linear / lws (they start from the Phase-I weights).", rich_help_panel=METHOD)
                          ] = None,
    head_kernel: Annotated[int, typer.Option("--head-kernel", help="spatial: conv kernel side (odd).",
                                             rich_help_panel=METHOD)] = 3,
    head_block: Annotated[str | None, choice(
        "--head-block", "spatial: the blocks", choices.SPATIAL_BLOCKS, panel=METHOD,
        note=f"conv: a full kxk conv; separable: a depthwise kxk conv, then a 1x1 (about a ninth of the "
             f"multiply-adds). Default: {choices.SPATIAL_FRESH['block']} for crt (chosen on the bound split), "
             f"{choices.SPATIAL_PHASE1['block']} for linear / lws.")] = None,
    train_on: Annotated[str, choice("--train-on", "Split the head is trained on", choices.TRAIN_ON, panel=METHOD,
                                    note="bound: the store's balanced bound split (the empirical classification "
                                         "bound, DisAlign).")] = "train",
    val_part: Annotated[str, choice("--val-part", "Validation images auto options are chosen on", choices.VAL_PARTS,
                                    panel=METHOD, note="tune / select: a stratified half (per class, alternate "
                                                       "images); ltkit sweep tunes on tune and compares on select."
                                    )] = "all",
    iterations: Annotated[int | None, typer.Option("--iterations", help="SGD steps (default 6400 for linear; else "
                                                                        "the method's epochs: 10 for crt/lws/wb, "
                                                                        "300 for la-loss/disalign).",
                                                   rich_help_panel=OPTIMISER)] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate (default 0.001 for linear, 0.2 for "
                                                          "crt/lws).", rich_help_panel=OPTIMISER)] = None,
    schedule: Annotated[str | None, choice("--schedule", "Learning-rate schedule", choices.FINETUNE_SCHEDULES,
                                           panel=OPTIMISER, note="Default constant for linear, cosine for crt/lws.")
                        ] = None,
    momentum: Annotated[float, typer.Option("--momentum", help="SGD momentum.", rich_help_panel=OPTIMISER)] = 0.9,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="SGD weight decay.",
                                                rich_help_panel=OPTIMISER)] = 5e-4,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Batch size; fsa/cloud/none need 2*Nt*(1+Na) "
                                                                        "(default 128 for linear, 512 for crt/lws, "
                                                                        "made the nearest that fits).",
                                                   rich_help_panel=BATCHES)] = None,
    na: Annotated[int | None, typer.Option("--na", help="Augmented samples per real tail sample (default: the table's "
                                                        "Nf, one per confusing class; fewer: drawn among the Nf).",
                                           rich_help_panel=BATCHES)] = None,
    tau_s: Annotated[str, typer.Option("--tau-s", help="fsa: class-specific locations have CAM > tau_s; auto: "
                                                       "chosen on the validation split with the next four, "
                                                       "no augmentation among the choices (kept unless FSA "
                                                       "beats it by more than one standard error).",
                                       rich_help_panel=BATCHES, autocompletion=completer([AUTO]))] = AUTO,
    tau_g: Annotated[str, typer.Option("--tau-g", help="fsa: class-generic locations have CAM < tau_g, or auto.",
                                       rich_help_panel=BATCHES, autocompletion=completer([AUTO]))] = AUTO,
    gamma_min: Annotated[str, typer.Option("--gamma-min", help="fsa: mixing ratio gamma ~ U(gamma_min, 1), the share "
                                                               "of class-specific vectors (paper: 0), or auto.",
                                           rich_help_panel=BATCHES, autocompletion=completer([AUTO]))] = AUTO,
    tail_draw: Annotated[str, choice("--tail-draw", "Tail samples", choices.DRAWS, panel=BATCHES, extra=[AUTO],
                                     note="class: a tail class, then one of its images; instance: uniform over "
                                          f"tail images; auto: fsa chooses on validation, the others take {DRAW}.")
                         ] = AUTO,
    head_draw: Annotated[str, choice("--head-draw", "Head samples", choices.DRAWS, panel=BATCHES, extra=[AUTO])
                         ] = AUTO,
    views: Annotated[bool, typer.Option("--views/--no-views", help="Draw a random stored train view per image when "
                                                                   "the store has views.", rich_help_panel=BATCHES)
                     ] = True,
    fusion_ratio: Annotated[str, typer.Option("--fusion-ratio", help="h2t: share of channels fused from the "
                                                                     "instance-drawn sample, in (0, 1); auto: chosen "
                                                                     "on the validation split.",
                                              rich_help_panel=BATCHES, autocompletion=completer(["auto"]))] = "auto",
    eval_every: Annotated[int, typer.Option("--eval-every", min=0, help="Validation accuracy every N iterations (0: "
                                                                        "only at the end).", rich_help_panel=RUN)] = 0,
    resident_gib: Annotated[float, typer.Option("--resident-gib", help="Keep spatial maps on the device up to this "
                                                                       "size; larger ones go to a mapped scratch copy "
                                                                       "(bounded memory).", rich_help_panel=RUN)] = 4.0,
    scratch_dir: Annotated[str | None, typer.Option("--scratch-dir", help="Folder of that scratch copy (default: the "
                                                                          "store's; as large as the maps, deleted on "
                                                                          "exit).", rich_help_panel=RUN)] = None,
    threads: Annotated[int, typer.Option("--threads", min=0, help="CPU threads while training (0: torch's default); "
                                                                  "one is usually fastest for these small batches.",
                                         rich_help_panel=RUN)] = 1,
    tensorboard: TensorBoard = None,
    seed: Seed = 0,
    device: Device = "auto",
    out: Out = None,
    force: Force = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Fine-tune the classifier on cached features (FSA by default) or re-balance it (cRT,
    LWS, tau-norm, NCM). Prints the classifier's path (default: beside the table, named
    after the method); a trained classifier's loss, rate and validation accuracy go to
    OUT.metrics.csv beside it."""
    from ltkit.augment import AugmentConfig
    from ltkit.finetune import augment_finetune
    from ltkit.finetune_config import FinetuneConfig
    from ltkit.runoptions import RunOptions

    def run() -> Path:
        batches = AugmentConfig(batch_size=batch_size, na=na, tau_s=parse_auto(tau_s, "--tau-s"),
                                tau_g=parse_auto(tau_g, "--tau-g"), gamma_min=parse_auto(gamma_min, "--gamma-min"),
                                tail_draw=tail_draw, head_draw=head_draw, use_views=views,
                                fusion_ratio=parse_auto(fusion_ratio, "--fusion-ratio"))
        how = RunOptions(device=device, threads=threads, eval_every=eval_every, resident_gib=resident_gib,
                         scratch_dir=scratch_dir, tensorboard=tensorboard)
        cfg = FinetuneConfig(augment=augment, classifier=classifier, iterations=iterations, lr=lr,
                             schedule=schedule, momentum=momentum, weight_decay=weight_decay, batches=batches,
                             margin=margin, scale=scale, tau=_finetune_tau(tau), ncm_metric=ncm_metric,
                             method_options=parse_method_options(method_option or []), head=head,
                             head_depth=head_depth, head_width=head_width, head_kernel=head_kernel,
                             head_block=head_block,
                             train_on=train_on, val_part=val_part, seed=seed, run=how)
        return augment_finetune(source, cfg, out=out, force=force, store=store)

    emit_path(run_stage(run, quiet=quiet, debug=debug))
