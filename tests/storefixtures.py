"""A small, valid, fully consistent feature store for tests of the Phase-II stages.

    from storefixtures import make_store
    path = make_store(tmp_path / "features.h5")            # 6 classes, counts 120..2

Features are random but learnable: each class has a positive channel pattern that is
strong at one class location and weak elsewhere, on top of ReLU'd noise. Every invariant of
a real store holds: pooled = spatial mean of the float32 maps (the stored maps are their
float16 rounding), logits = pooled @ W.T + b (or the cosine formula), CAMs from
`ltkit.cams.label_cams` on the stored maps, labels and per-class counts consistent, all root
attributes, and a lineage naming a dummy backbone file written beside the store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ltkit import __version__
from ltkit.artifacts import file_sha256, make_lineage
from ltkit.cams import label_cams
from ltkit.store import VIEWS, StoreLayout, StoreWriter, create_store

DEFAULT_COUNTS = (120, 60, 25, 12, 5, 2)  # many: 1 class, medium: 2, few: 3 (thresholds 100 / 20)


def _counts(num_classes: int, counts: tuple[int, ...] | None) -> list[int]:
    if counts is not None:
        if len(counts) != num_classes:
            raise ValueError(f"counts has {len(counts)} entries for {num_classes} classes")
        return [int(c) for c in counts]
    if num_classes == len(DEFAULT_COUNTS):
        return list(DEFAULT_COUNTS)
    ratio = np.arange(num_classes) / max(num_classes - 1, 1)
    return [max(2, round(120 * (2 / 120) ** r)) for r in ratio]  # exponential 120 -> 2


def _maps(labels: np.ndarray, means: np.ndarray, spots: np.ndarray, height: int, width: int,
          rng: np.random.Generator) -> np.ndarray:
    """(N, C, H, W) float32 non-negative maps, class evidence strongest at the class spot."""
    n, c = len(labels), means.shape[1]
    maps = np.maximum(rng.normal(0.0, 0.5, (n, c, height * width)), 0.0)  # (N, C, H*W)
    maps += 0.3 * means[labels][:, :, None]  # weak class evidence everywhere
    maps[np.arange(n), :, spots[labels]] += 2.0 * means[labels]  # strong at the class spot
    return maps.reshape(n, c, height, width).astype(np.float32)


def _rows(maps: np.ndarray, labels: np.ndarray, head: dict, spatial: bool) -> dict[str, np.ndarray]:
    features = maps.astype(np.float16)  # (N, C, H, W): what the store keeps
    pooled = maps.mean(axis=(2, 3))  # (N, C) float32, from the float32 maps
    weight = head["weight"]
    if head["kind"] == "cosine":
        unit = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        wunit = weight / np.maximum(np.linalg.norm(weight, axis=1, keepdims=True), 1e-12)
        logits = head["scale"] * unit @ wunit.T  # (N, K)
    else:
        logits = pooled @ weight.T + head["bias"]  # (N, K)
    out = {"pooled": pooled, "logits": logits.astype(np.float32)}
    if spatial:
        cams = label_cams(torch.from_numpy(features.astype(np.float32)), torch.from_numpy(weight),
                          torch.from_numpy(labels))  # (N, H, W)
        out |= {"features": features, "cams": cams.numpy().astype(np.float16)}
    return out


def make_store(path: str | Path, *, num_classes: int = 6, counts: tuple[int, ...] | None = DEFAULT_COUNTS,
               channels: int = 8, height: int = 4, width: int = 4, test_per_class: int = 5,
               val_per_class: int = 3, seed: int = 0, spatial_test: bool = False,
               head: str = "linear", views: int = 0, bound_per_class: int = 0,
               spatial_splits: tuple[str, ...] | None = None) -> Path:
    """Write a finished store at `path` (and `<stem>.backbone.pt` beside it); return `path`.

    `counts`: training images per class (None: an exponential profile 120 -> 2);
    `val_per_class=0`: no /val split; `spatial_test`: keep maps and CAMs for /test too;
    `head`: "linear" or "cosine" (scale 16, no bias); `views`: augmented views per train image;
    `bound_per_class`: a balanced /bound split; `spatial_splits`: the splits keeping maps (else
    train, and test with `spatial_test`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if counts == DEFAULT_COUNTS and num_classes != len(DEFAULT_COUNTS):
        counts = None
    train_counts = _counts(num_classes, counts)
    rng = np.random.default_rng(seed)
    means = np.abs(rng.normal(0.0, 1.0, (num_classes, channels))).astype(np.float32)  # (K, C)
    spots = rng.integers(0, height * width, num_classes)  # (K,) class location
    # Phase-I classifier: a noisy nearest-class-mean rule with a bias toward the head classes,
    # so it is good but visibly worse on the tail, like a real long-tailed backbone's.
    centres = 0.2 + (0.3 + 2.0 / (height * width)) * means  # (K, C) expected pooled feature
    weight = (4.0 * centres + rng.normal(0.0, 0.3, means.shape)).astype(np.float32)  # (K, C)
    prior = np.log(np.asarray(train_counts, np.float64) / max(train_counts))  # (K,) <= 0
    bias = (-2.0 * (centres**2).sum(1) + 0.5 * prior).astype(np.float32)  # (K,)
    if head == "cosine":
        weight = (centres + rng.normal(0.0, 0.2, means.shape)).astype(np.float32)  # (K, C)
        classifier = {"kind": "cosine", "weight": weight, "bias": None, "scale": 16.0}
    else:
        classifier = {"kind": "linear", "weight": weight, "bias": bias, "scale": None}

    labels = {"train": np.repeat(np.arange(num_classes), train_counts),
              "test": np.repeat(np.arange(num_classes), test_per_class)}
    if val_per_class > 0:
        labels["val"] = np.repeat(np.arange(num_classes), val_per_class)
    if bound_per_class > 0:
        labels["bound"] = np.repeat(np.arange(num_classes), bound_per_class)
    spatial = spatial_splits or (("train", "test") if spatial_test else ("train",))
    n_train = len(labels["train"])
    columns = {split: {"labels": lab.astype(np.int64), "source_index": np.arange(len(lab), dtype=np.int64)}
               for split, lab in labels.items()}
    rows = {split: len(lab) for split, lab in labels.items()}
    if views:
        rows[VIEWS] = views * n_train
        columns[VIEWS] = {"labels": np.tile(labels["train"], views).astype(np.int64),
                          "sample": np.tile(np.arange(n_train, dtype=np.int64), views),
                          "view": np.repeat(np.arange(views, dtype=np.int64), n_train)}

    backbone = path.with_name(path.stem + ".backbone.pt")
    torch.save({"format": "ltkit-test-dummy-backbone", "seed": seed}, backbone)
    options = {"fixture": True, "num_classes": num_classes, "channels": channels, "height": height,
               "width": width, "head": head, "views": views}
    attrs = {
        "class_names": [f"class{k}" for k in range(num_classes)], "train_counts": train_counts,
        "num_classes": num_classes, "feature_shape": [channels, height, width], "arch": "fixture",
        "layer": "forward_features", "head": classifier["kind"],
        "dataset": {"name": "synthetic", "num_classes": num_classes, "counts": train_counts,
                    "val_per_class": val_per_class, "test_per_class": test_per_class, "seed": seed},
        "backbone_path": str(backbone.resolve()), "backbone_sha256": file_sha256(backbone),
        "ltkit_version": __version__, "options": options, "seed": seed,
        "lineage": make_lineage({"backbone": backbone}, options, seed), "train_views": views,
        "spatial_splits": list(spatial)}
    create_store(path, StoreLayout(channels, height, width, num_classes, rows, spatial),
                 attrs=attrs, classifier=classifier, columns=columns)
    with StoreWriter(path) as writer:
        train_maps = _maps(labels["train"], means, spots, height, width, rng)
        for split, lab in labels.items():
            maps = train_maps if split == "train" else _maps(lab, means, spots, height, width, rng)
            writer.write(split, 0, **_rows(maps, lab, classifier, split in spatial))
        for view in range(views):  # a view: the training map, jittered
            jitter = np.maximum(train_maps + rng.normal(0.0, 0.2, train_maps.shape), 0.0).astype(np.float32)
            writer.write(VIEWS, view * n_train, **_rows(jitter, labels["train"], classifier, "train" in spatial))
        writer.mark_complete()
    return path
