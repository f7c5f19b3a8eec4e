"""``ltkit extract``: cache what a backbone sees in an HDF5 feature store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ltkit import choices
from ltkit.cli import app
from ltkit.cli.common import Debug, Device, Force, Out, Quiet, Seed, Workers, emit_path, run_stage
from ltkit.cli.helpstyle import DATA, OUTPUT, RUN, choice, stage
from ltkit.errors import ConfigError


def parse_splits(text: str | None, no_spatial: bool) -> tuple[str, ...]:
    """``--spatial-splits train,test`` / ``--no-spatial`` -> the splits that keep maps."""
    if no_spatial and text is not None:
        raise ConfigError("give either --spatial-splits or --no-spatial, not both")
    if no_spatial:
        return ()
    if text is None:
        return ("train",)
    return tuple(part for part in text.replace(" ", "").split(",") if part and part != "none")


@stage(app, "extract", example=["ltkit extract runs/ce.pt -o runs/ce.h5",
                                 "ltkit train-backbone --epochs 30 | ltkit extract - --spatial-splits train,val"])
def extract_cmd(
    checkpoint: Annotated[str, typer.Argument(help="Backbone checkpoint, or - to read its path from stdin.")],
    data: Annotated[str | None, choice("--data", "Data set replacing the checkpoint's (same classes)",
                                       choices.DATASETS, panel=DATA)] = None,
    root: Annotated[str | None, typer.Option("--root", help="Data folder replacing the checkpoint's.",
                                             rich_help_panel=DATA)] = None,
    spatial_splits: Annotated[str | None, typer.Option("--spatial-splits", help="Comma-separated splits that keep "
                                                                                "feature maps and CAMs: train, val, "
                                                                                "test (default: train).",
                                                              rich_help_panel=OUTPUT)] = None,
    no_spatial: Annotated[bool, typer.Option("--no-spatial", help="Keep no feature maps or CAMs, only pooled features "
                                                                  "and logits.", rich_help_panel=OUTPUT)] = False,
    train_views: Annotated[int, typer.Option("--train-views", min=0, help="Also store K train-time-augmented views of "
                                                                          "every training image.",
                                                        rich_help_panel=OUTPUT)] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.",
                                            rich_help_panel=RUN)] = 256,
    precision: Annotated[str, choice("--precision", "Precision", choices.PRECISIONS, panel=RUN,
                                     note="auto: bf16 (or fp16) on CUDA, fp32 on CPU.")] = "auto",
    compression: Annotated[str, choice("--compression", "Store compression", choices.COMPRESSIONS, panel=OUTPUT,
                                       note="Applied once the store is complete.")] = "none",
    seed: Seed = 0,
    device: Device = "auto",
    workers: Workers = 0,
    out: Out = None,
    force: Force = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Run a backbone over its training, validation and test images (no augmentation) and
    write maps, CAMs, pooled features and logits to one store; print the store's path.
    An interrupted run resumes when the same command is run again."""
    from ltkit.extract import ExtractConfig, extract

    def run() -> Path:
        splits = parse_splits(spatial_splits, no_spatial)
        cfg = ExtractConfig(data=data, root=root, spatial_splits=splits, train_views=train_views,
                            batch_size=batch_size, workers=workers, device=device, precision=precision,
                            compression=compression, seed=seed)
        return extract(checkpoint, cfg, out=out, force=force)

    emit_path(run_stage(run, quiet=quiet, debug=debug))
