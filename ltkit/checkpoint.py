"""The backbone checkpoint: a plain dict that ``torch.load(path, weights_only=True)`` reads.

Keys: format, format_version, model_state, arch, head, num_classes, in_channels, class_names,
head_scale (cosine head), class_counts, dataset (the DatasetSpec as a dict), config (the TrainConfig as a dict),
data_fingerprint, lineage, versions, metrics. A resume state (``NAME.partial``) adds optimizer,
scaler and train_parts (see `ltkit.train_state`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ltkit.artifacts import load_torch_artifact
from ltkit.errors import ArtifactError, LtkitError

FORMAT = "ltkit-backbone"
FORMAT_VERSION = 1


REQUIRED = {"model_state": dict, "arch": str, "head": str, "num_classes": int, "in_channels": int,
            "class_names": list, "class_counts": list, "dataset": dict}


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A backbone checkpoint's dict, its keys checked (ArtifactError when one is missing or of
    the wrong kind, or the class names and count disagree)."""
    ckpt = load_torch_artifact(path, FORMAT)
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path} is a backbone checkpoint of format version "
                            f"{ckpt.get('format_version')}; this ltkit reads version {FORMAT_VERSION}")
    bad = [key for key, kind in REQUIRED.items() if not isinstance(ckpt.get(key), kind)]
    if bad:
        raise ArtifactError(f"{path} is a damaged backbone checkpoint (missing or malformed: "
                            f"{', '.join(bad)}); train it again with ltkit train-backbone")
    if len(ckpt["class_names"]) != ckpt["num_classes"] or len(ckpt["class_counts"]) != ckpt["num_classes"]:
        raise ArtifactError(f"{path} names {len(ckpt['class_names'])} classes and "
                            f"{len(ckpt['class_counts'])} counts for num_classes={ckpt['num_classes']}; "
                            f"it is damaged: train it again with ltkit train-backbone")
    return ckpt


def load_backbone(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The backbone of a checkpoint, in eval mode on ``device``, and the checkpoint's metadata."""
    from ltkit.models import create_model

    ckpt = read_checkpoint(path)
    try:
        model = create_model(ckpt["arch"], ckpt["num_classes"], ckpt["in_channels"], head=ckpt["head"])
    except LtkitError as exc:  # an architecture this ltkit does not have
        raise ArtifactError(f"{path}: cannot build its backbone ({exc})") from None
    if ckpt.get("head_scale") is not None:
        model.fc.scale = float(ckpt["head_scale"])
    try:
        model.load_state_dict(ckpt["model_state"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ArtifactError(f"{path}: the weights do not fit a {ckpt['arch']} with "
                            f"{ckpt['num_classes']} classes ({str(exc).splitlines()[0][:160]})") from None
    model.to(device).eval()
    info = {k: v for k, v in ckpt.items() if k != "model_state"}
    return model, info
