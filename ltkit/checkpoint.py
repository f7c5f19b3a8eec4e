"""The backbone checkpoint: a plain dict that ``torch.load(path, weights_only=True)`` reads.

Keys: format, format_version, model_state, arch, head, num_classes, in_channels, class_names,
head_scale (cosine head), class_counts, dataset (the DatasetSpec as a dict), config (the TrainConfig as a dict),
lineage, versions, metrics. A resume state (``NAME.partial``) adds optimizer, scheduler,
scaler and epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ltkit.artifacts import load_torch_artifact
from ltkit.errors import ArtifactError

FORMAT = "ltkit-backbone"
FORMAT_VERSION = 1


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    ckpt = load_torch_artifact(path, FORMAT)
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path} is a backbone checkpoint of format version "
                            f"{ckpt.get('format_version')}; this ltkit reads version {FORMAT_VERSION}")
    return ckpt


def load_backbone(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The backbone of a checkpoint, in eval mode on ``device``, and the checkpoint's metadata."""
    from ltkit.models import create_model

    ckpt = read_checkpoint(path)
    model = create_model(ckpt["arch"], ckpt["num_classes"], ckpt["in_channels"], head=ckpt["head"])
    if ckpt.get("head_scale") is not None:
        model.fc.scale = float(ckpt["head_scale"])
    try:
        model.load_state_dict(ckpt["model_state"])
    except RuntimeError as exc:
        raise ArtifactError(f"{path}: the weights do not fit a {ckpt['arch']} with "
                            f"{ckpt['num_classes']} classes ({str(exc).splitlines()[0][:160]})") from None
    model.to(device).eval()
    info = {k: v for k, v in ckpt.items() if k != "model_state"}
    return model, info
