"""What an extracted store records about how it was made: the options that fingerprint it
(`store_options`: a partial is resumed only under the same ones) and its root attributes
(`root_attrs`, docs/store.md). Plain JSON values only; `ltkit.extract` writes them.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ltkit import __version__
from ltkit.artifacts import make_lineage
from ltkit.classifiers import Classifier

if TYPE_CHECKING:  # only for the annotation: ltkit.extract imports this module
    from ltkit.extract import ExtractConfig


def store_options(cfg: ExtractConfig, spec, sha: str, spatial: list[str], precision: str) -> dict[str, Any]:
    """The extraction options as plain JSON: they fingerprint the partial for resume."""
    return json.loads(json.dumps({
        "checkpoint_sha256": sha, "dataset": dataclasses.asdict(spec), "spatial_splits": spatial,
        "train_views": cfg.train_views, "batch_size": cfg.batch_size, "precision": precision,
        "compression": cfg.compression, "seed": cfg.seed, "ltkit_version": __version__}))


def root_attrs(info: dict[str, Any], counts: np.ndarray, ckpt: Path, options: dict[str, Any],
               clf: Classifier, fmap: tuple[int, int, int], seed: int) -> dict[str, Any]:
    """The store's root attributes (docs/store.md); `counts`: (K,) of the whole training split."""
    k = len(info["class_names"])
    return {"class_names": list(info["class_names"]), "train_counts": [int(c) for c in counts],
            "num_classes": k, "feature_shape": list(fmap), "arch": info["arch"],
            "layer": "forward_features", "head": clf.kind, "dataset": options["dataset"],
            "backbone_path": str(ckpt.resolve()), "backbone_sha256": options["checkpoint_sha256"],
            "ltkit_version": __version__, "options": options, "seed": seed,
            "lineage": make_lineage({"backbone": ckpt}, options, seed), "train_views": options["train_views"],
            "spatial_splits": options["spatial_splits"]}
