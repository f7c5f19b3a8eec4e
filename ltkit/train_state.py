"""What `train-backbone` writes and reads back: the checkpoint, the resume state, and whether an
existing one was made by the same run (same options, same data).

The saved ``config`` is `TrainConfig.as_dict()`: the loss options nested under
``loss_options``, how the run ran under ``run``. Checkpoints written before that nesting hold
one flat dict; `result_options` reads both layouts as the same flat view (the loss options'
names are unique among the config's), leaving out how the run ran, so an old checkpoint keeps
being reused and an old resume state keeps resuming.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ltkit import console, runoptions
from ltkit.artifacts import load_torch_artifact, make_lineage, other_options, versions
from ltkit.checkpoint import FORMAT, FORMAT_VERSION
from ltkit.data import DatasetSpec, Splits
from ltkit.errors import ArtifactError
from ltkit.runlog import RunLog, log_path

if TYPE_CHECKING:
    from ltkit.train import TrainConfig
    from ltkit.training_net import TrainingNet

DATA_CHANGED = "its images, their files or their labels differ"  # why a rerun is refused


def result_options(config: dict[str, Any]) -> dict[str, Any]:
    """A saved config (nested, or flat as before the nesting) as one flat dict of the options
    that change the result: how-it-ran options left out, the loss options lifted to the top."""
    flat = runoptions.result_options(config)
    loss_options = flat.pop("loss_options", None)
    return {**flat, **loss_options} if isinstance(loss_options, dict) else flat


def option_diff(saved_config: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """Options (that change the result) on which a saved config differs from ``cfg``. Options
    added since the config was saved count as their defaults (it was made with those)."""
    from ltkit.train import TrainConfig

    defaults = result_options(TrainConfig(data=DatasetSpec(name="")).as_dict())
    saved = {**defaults, **result_options(saved_config)}
    wanted = result_options(cfg.as_dict())
    if isinstance(saved.get("data"), dict):  # spec fields added since the checkpoint: their defaults
        saved["data"] = {**defaults["data"], **saved["data"]}
        if wanted["data"]["root"] is None:
            # no --root asks for the source's default folder, which the checkpoint records by name
            saved["data"]["root"] = None
    return sorted(k for k in wanted if saved.get(k) != wanted[k])


def data_changed(state: dict[str, Any], fingerprint: str) -> bool:
    """Whether a saved state was made from other data than that of `fingerprint` (one saved
    before fingerprints: not known, so not changed)."""
    return state.get("data_fingerprint", fingerprint) != fingerprint


def checkpoint_differs(path: Path, cfg: TrainConfig, fingerprint: str) -> str | None:
    """`reuse_existing`'s test for a finished checkpoint at `path`: how it differs from the run
    `cfg` asks for on data of `fingerprint`, or None when it is that run's."""
    ckpt = load_torch_artifact(path, FORMAT)
    if "optimizer" in ckpt:
        return "is an unfinished run's state, not a final checkpoint"
    reason = other_options(option_diff(ckpt.get("config", {}), cfg))
    if reason is None and data_changed(ckpt, fingerprint):
        reason = f"was trained on data that has changed since ({DATA_CHANGED})"
    return reason


def load_resume_state(partial: Path, cfg: TrainConfig, fingerprint: str) -> dict[str, Any] | None:
    """The resume state at `partial` when there is one of this very run; another run's is refused."""
    if not partial.exists():
        return None
    state = load_torch_artifact(partial, FORMAT)
    diff = option_diff(state.get("config", {}), cfg)
    if diff:
        raise ArtifactError(f"{partial} is an interrupted run with other options ({', '.join(diff)}); "
                            "rerun with the same options to resume it, or pass --force to start over")
    if data_changed(state, fingerprint):
        raise ArtifactError(f"{partial} is an interrupted run on data that has changed since "
                            f"({DATA_CHANGED}); pass --force to start over on the data as it is now")
    return state


def checkpoint(cfg: TrainConfig, model: torch.nn.Module, splits: Splits, fingerprint: str,
               world_size: int, epoch: int, metrics: dict[str, Any],
               history: list[dict[str, Any]]) -> dict[str, Any]:
    """The checkpoint's dict after `epoch` epochs (see `ltkit.checkpoint`); the resume state
    adds the optimiser's and the training-only parts' state to it."""
    options = cfg.as_dict()
    return {"format": FORMAT, "format_version": FORMAT_VERSION,
            "model_state": plain_state(model), "arch": cfg.arch,
            "head": cfg.resolved_head(), "head_scale": getattr(model.fc, "scale", None),
            "num_classes": len(splits.class_names), "in_channels": splits.in_channels,
            "class_names": list(splits.class_names),
            "class_counts": [int(c) for c in splits.train_counts],
            "dataset": dataclasses.asdict(cfg.data), "config": options,
            "data_fingerprint": fingerprint,
            "kept_indices": (torch.as_tensor(splits.kept_indices)
                             if splits.kept_indices is not None else None),
            "lineage": make_lineage({}, options, cfg.seed), "versions": versions(),
            "metrics": metrics, "epoch": epoch, "history": history, "world_size": world_size}


def training_state(optimizer, scaler, net: TrainingNet) -> dict[str, Any]:
    """What the resume state holds beyond the checkpoint (never in the checkpoint itself)."""
    return {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "train_parts": net.parts_state()}


def restore(state: dict[str, Any] | None, partial: Path, cfg: TrainConfig, model: torch.nn.Module,
             net: TrainingNet, optimizer, scaler) -> tuple[int, list[dict[str, Any]]]:
    """Load a resume state into the run; the epoch to start from and the history so far."""
    if state is None:
        return 0, []
    model.load_state_dict(state["model_state"])
    net.load_parts_state(state.get("train_parts", {}))
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    console.log(f"resuming {partial} after epoch {state['epoch']}/{cfg.epochs}")
    history = state["history"]
    for epoch, row in enumerate(history, 1):  # a state of before the run log numbered no rows
        row.setdefault("epoch", epoch)
    return state["epoch"], history


def open_run_log(cfg: TrainConfig, out: Path, history: list[dict[str, Any]], is_main: bool):
    """The run log of `out` (``OUT.metrics.csv``, see `ltkit.runlog`), continued from the
    `history` of a resumed run; on a process other than rank 0, nothing to log to (None)."""
    if not is_main:
        return contextlib.nullcontext()
    extra = [name for name, on in (("cls_loss", cfg.scl_weight > 0 or cfg.rsg), ("scl_loss", cfg.scl_weight > 0),
                                   ("cesc_loss", cfg.rsg), ("mv_loss", cfg.rsg), ("generated", cfg.rsg)) if on]
    return RunLog(log_path(out), "epoch", extra=extra, rows=history, tensorboard=cfg.run.tensorboard)


def plain_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's weights as plain CPU tensors (loadable into an unconverted model)."""
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
