"""The validation split and its two stratified halves: the one accessor of validation data.

Every choice ltkit makes on validation (a method's ``auto`` options, tau-norm's and
logit-adjust's tau, an augmenter's ``auto`` grid) reads its images through `val_features`.
A choice made on the same images a comparison is then made on inflates the winner (its
score is a maximum over its grid), so `ltkit sweep` splits the validation split in two
disjoint halves: methods choose their options on ``tune`` and the sweep compares them on
``select`` (`ltkit.sweep`).

The halves are stratified and deterministic: within each class, the validation images in
store order alternate, the 1st, 3rd, 5th ... going to ``tune``, the 2nd, 4th ... to
``select`` (a class of an odd count gives ``tune`` one more). ``all`` is the whole split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ltkit import choices
from ltkit.heads import split_features

VAL_PARTS = choices.VAL_PARTS
RULE = "per class, the validation images in store order alternate: 1st, 3rd, ... tune; 2nd, 4th, ... select"


def part_rows(labels: np.ndarray, part: str) -> np.ndarray:
    """Row indices (ascending) of ``part`` of a validation split with these labels (N,)."""
    labels = np.asarray(labels)
    if part == "all":
        return np.arange(len(labels))
    order = np.argsort(labels, kind="stable")  # rows grouped by class, store order within
    grouped = labels[order]
    rank = np.arange(len(labels)) - np.searchsorted(grouped, grouped, side="left")  # place within its class
    return np.sort(order[rank % 2 == VAL_PARTS.index(part) - 1])  # tune: even places, select: odd


def val_features(store, device: torch.device | str = "cpu", array: str = "pooled",
                 part: str = "all") -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels (N,) int64) of ``part`` of the store's validation split, on ``device``."""
    inputs, labels = split_features(store, "val", device, array)
    if part == "all":
        return inputs, labels
    rows = torch.from_numpy(part_rows(labels.cpu().numpy(), part)).to(labels.device)
    return inputs[rows], labels[rows]


def describe(labels: np.ndarray, num_classes: int) -> dict[str, Any]:
    """What a report records of the split into halves: the rule and each half's images per class."""
    return {"rule": RULE} | {part: np.bincount(np.asarray(labels)[part_rows(labels, part)],
                                               minlength=num_classes).tolist() for part in VAL_PARTS[1:]}
