"""``ltkit augment-finetune``: Phase II, a classifier fine-tuned or re-balanced from the cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ltkit.augment import AUGMENTERS, DRAW, TAU_G, TAU_S
from ltkit.cli import app
from ltkit.cli.common import Debug, Device, Force, Out, Quiet, Seed, emit_path, run_stage
from ltkit.errors import ConfigError
from ltkit.methods import CLASSIFIERS


def parse_tau(text: str) -> float | None:
    """--tau: a number, or auto (None); anything else is one line, exit 2."""
    if text == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--tau must be a number or auto, got {text!r}") from None


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


@app.command("augment-finetune")
def augment_finetune_cmd(
    source: Annotated[str, typer.Argument(help="Confusing-class table, or a feature store (its table is built with "
                                               "the defaults), or - to read the path from stdin.")],
    augment: Annotated[str, typer.Option("--augment", help=f"Batches: {', '.join(AUGMENTERS.names())}; auto: fsa for "
                                                           f"linear, class-balanced for crt/lws, none for "
                                                           f"tau-norm/ncm.")] = "auto",
    classifier: Annotated[str, typer.Option("--classifier",
                                            help=f"Classifier: {', '.join(CLASSIFIERS.names())}.")] = "linear",
    iterations: Annotated[int | None, typer.Option("--iterations", help="SGD steps (default 6400 for linear; 10 "
                                                                        "epochs-equivalent for crt/lws).")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning "
                                                          "rate (default 0.001 for linear, 0.2 for crt/lws).")] = None,
    schedule: Annotated[str | None, typer.Option("--schedule", help="constant or cosine (default constant for linear, "
                                                                    "cosine for crt/lws).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Batch size; fsa/cloud/none need 2*Nt*(1+Na) "
                                                                        "(default 128 for linear, 512 for crt/lws, "
                                                                        "made the nearest that fits).")] = None,
    momentum: Annotated[float, typer.Option("--momentum", help="SGD momentum.")] = 0.9,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="SGD weight decay.")] = 5e-4,
    na: Annotated[int | None, typer.Option("--na", help="Augmented samples per real tail sample (default: the table's "
                                                        "Nf, "
                                                        "one per confusing class; fewer: drawn among the Nf).")] = None,
    tau_s: Annotated[float, typer.Option("--tau-s", help="fsa: class-specific locations have CAM > tau_s.")] = TAU_S,
    tau_g: Annotated[float, typer.Option("--tau-g", help="fsa: class-generic locations have CAM < tau_g.")] = TAU_G,
    gamma_min: Annotated[float, typer.Option("--gamma-min", help="fsa: mixing ratio gamma ~ U(gamma_min, 1), the "
                                                                 "share of class-specific vectors (paper: 0).")] = 0.0,
    tail_draw: Annotated[str, typer.Option("--tail-draw", help="Tail samples: class (a tail class, then one of its "
                                                               "images; chosen on validation) or instance (uniform "
                                                               "over tail images).")] = DRAW,
    head_draw: Annotated[str, typer.Option("--head-draw", help="Head samples: class or instance.")] = DRAW,
    views: Annotated[bool, typer.Option("--views/--no-views", help="Draw a random stored train view per image when "
                                                                   "the store has views.")] = True,
    margin: Annotated[float, typer.Option("--margin", help="cloud: additive angular margin (radians).")] = 0.2,
    scale: Annotated[float, typer.Option("--scale", help="cloud: cosine logit scale (a cosine Phase-I head keeps its "
                                                         "own).")] = 16.0,
    tau: Annotated[str, typer.Option("--tau", help="tau-norm: exponent, or auto to pick it on the validation "
                                                   "split.")] = "auto",
    ncm_metric: Annotated[str, typer.Option("--ncm-metric", help="ncm: cosine or l2.")] = "cosine",
    method_option: Annotated[list[str] | None, typer.Option("--method-option", help="NAME=VALUE: an option of the "
                                                                                    "chosen classifier method itself "
                                                                                    "(repeat for several).")] = None,
    eval_every: Annotated[int, typer.Option("--eval-every", min=0, help="Validation accuracy every N iterations (0: "
                                                                        "only at the end).")] = 0,
    resident_gib: Annotated[float, typer.Option("--resident-gib", help="Keep spatial maps on the device up to this "
                                                                       "size; larger ones go to a mapped scratch copy "
                                                                       "(bounded memory).")] = 4.0,
    scratch_dir: Annotated[str | None, typer.Option("--scratch-dir", help="Folder of that scratch copy (default: the "
                                                                          "store's; as large as the maps, deleted on "
                                                                          "exit).")] = None,
    threads: Annotated[int, typer.Option("--threads", min=0, help="CPU threads while training (0: torch's default); "
                                                                  "one "
                                                                  "is usually fastest for these small batches.")] = 1,
    store: Annotated[Path | None, typer.Option("--store", help="The table's store, when it moved or changed since the "
                                                               "table was built.")] = None,
    seed: Seed = 0,
    device: Device = "auto",
    out: Out = None,
    force: Force = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Fine-tune the classifier on cached features (FSA by default) or re-balance it (cRT,
    LWS, tau-norm, NCM). Prints the classifier's path (default: beside the table, named
    after the method)."""
    from ltkit.augment import AugmentConfig
    from ltkit.finetune import augment_finetune
    from ltkit.finetune_config import FinetuneConfig
    from ltkit.runoptions import RunOptions

    def run() -> Path:
        batches = AugmentConfig(batch_size=batch_size, na=na, tau_s=tau_s, tau_g=tau_g, gamma_min=gamma_min,
                                tail_draw=tail_draw, head_draw=head_draw, use_views=views)
        how = RunOptions(device=device, threads=threads, eval_every=eval_every, resident_gib=resident_gib,
                         scratch_dir=scratch_dir)
        cfg = FinetuneConfig(augment=augment, classifier=classifier, iterations=iterations, lr=lr,
                             schedule=schedule, momentum=momentum, weight_decay=weight_decay, batches=batches,
                             margin=margin, scale=scale, tau=parse_tau(tau), ncm_metric=ncm_metric,
                             method_options=parse_method_options(method_option or []), seed=seed, run=how)
        return augment_finetune(source, cfg, out=out, force=force, store=store)

    emit_path(run_stage(run, quiet=quiet, debug=debug))
