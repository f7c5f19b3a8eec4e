"""``ltkit plot-features``: a 2-D view of stored features (Chu et al.'s figure 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ltkit import choices
from ltkit.choices import TAU_G, TAU_S
from ltkit.cli import app
from ltkit.cli.common import Debug, Force, Quiet, Seed, emit_path, run_stage
from ltkit.cli.helpstyle import DATA, MEASURE, OUTPUT, choice, stage


@stage(app, "plot-features", help="PCA view of pooled features of chosen classes, beside their "
       "class-specific (CAM > tau_s) and class-generic (CAM < tau_g) location vectors "
       "(the paper's figure 4). stdout: the PNG's path.", example=[
           "ltkit plot-features runs/ce.h5 --classes Shirt,T-shirt/top,Pullover -o shirts.png"])
def plot_features_cmd(
    store: str = typer.Argument(..., help="Feature store, or - to read its path from stdin."),
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="PNG to write (default: STORE's name + .features.png beside it).",
        rich_help_panel=OUTPUT)] = None,
    classes: Annotated[str | None, typer.Option(
        "--classes", help="Comma-separated class names or indices (default: the 2 largest and 2 smallest "
                          "classes).", rich_help_panel=DATA)] = None,
    split: Annotated[str, choice("--split", "Store split whose images are drawn", choices.STORE_SPLITS,
                                 note="Maps are kept for train by default.", panel=DATA)] = "train",
    per_class: Annotated[int, typer.Option("--per-class", help="Images drawn per class.", rich_help_panel=DATA)] = 60,
    vectors: Annotated[int, typer.Option(
        "--vectors", help="Location vectors shown per class and kind, at most.",
                    rich_help_panel=MEASURE)] = 300,
    tau_s: Annotated[float, typer.Option("--tau-s", help="Class-specific locations: CAM > tau_s.",
                                                   rich_help_panel=MEASURE)] = TAU_S,
    tau_g: Annotated[float, typer.Option("--tau-g", help="Class-generic locations: CAM < tau_g.",
                                                   rich_help_panel=MEASURE)] = TAU_G,
    normalize: Annotated[bool, typer.Option(
        "--normalize/--no-normalize", help="L2-normalise each vector before PCA (directions, not norms).",
        rich_help_panel=MEASURE)] = True,
    seed: Seed = 0,
    force: Force = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    from ltkit.feature_plots import FeaturePlotConfig, plot_features

    names = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    cfg = FeaturePlotConfig(classes=names, split=split, per_class=per_class, vectors=vectors,
                            tau_s=tau_s, tau_g=tau_g, seed=seed, normalize=normalize)
    emit_path(run_stage(lambda: plot_features(store, cfg, out=out, force=force), quiet=quiet,
                        debug=debug))
