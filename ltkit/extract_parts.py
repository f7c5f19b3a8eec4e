"""What `extract` runs over: the checkpoint's data set cut into parts (train, val, bound, test,
augmented train views), each with the per-row columns known before the backbone runs.

Augmented views are seeded per (seed, view, image), so every view is reproducible on its own,
whatever the batch size, the number of workers, or where an interrupted run resumes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from ltkit import console
from ltkit.data import DatasetSpec, build_splits, spec_from_dict
from ltkit.errors import DataError
from ltkit.store import VIEWS


def view_seed(seed: int, view: int, index: int) -> int:
    """The RNG seed of view `view` of training image `index`: independent of batching."""
    return int(np.random.SeedSequence([seed, view, index]).generate_state(1)[0])


class SeededViews(Dataset):
    """Row ``v * N + i``: view v of training image i, augmented under `view_seed(seed, v, i)`."""

    def __init__(self, dataset: Dataset, views: int, seed: int):
        self.dataset, self.views, self.seed, self.n = dataset, views, seed, len(dataset)

    def __len__(self) -> int:
        return self.views * self.n

    def __getitem__(self, row: int) -> tuple[torch.Tensor, int]:
        view, index = divmod(row, self.n)
        with torch.random.fork_rng(devices=[]):  # leave the caller's RNG as it was
            torch.manual_seed(view_seed(self.seed, view, index))
            return self.dataset[index]


@dataclass
class Part:
    """One pass of the extraction: a split (or the augmented views) and what it writes."""

    name: str  # "train", "val", "bound", "test" or VIEWS
    dataset: Dataset  # items (image (C, S, S) float32, label)
    columns: dict[str, np.ndarray]  # per-row arrays known up front: labels, source indices
    spatial: bool  # keep feature maps and CAMs

    @property
    def rows(self) -> int:
        return len(self.columns["labels"])

    def shard(self, rank: int, world: int, batch: int) -> Part:
        """Rank ``rank``'s contiguous slice, cut on batch boundaries so that every batch holds
        the same images as in a single-process run (and so gives the same numbers)."""
        batches = -(-self.rows // batch)
        lo = min(rank * batches // world * batch, self.rows)
        hi = min((rank + 1) * batches // world * batch, self.rows)
        return Part(self.name, Subset(self.dataset, range(lo, hi)),
                    {k: v[lo:hi] for k, v in self.columns.items()}, self.spatial)


def checkpoint_data(info: dict[str, Any], data: str | None, root: str | None):
    """The data set spec of a backbone checkpoint (`data` / `root` replacing its own) and its
    splits (evaluation transforms); DataError when its classes are not the backbone's."""
    spec = spec_from_dict(dict(info["dataset"]))
    if data is not None:
        spec = dataclasses.replace(spec, name=data)
    if root is not None:
        spec = dataclasses.replace(spec, root=root)
    splits = build_splits(spec, train_augment=False)
    if list(splits.class_names) != list(info["class_names"]):
        raise DataError(f"the data set's classes ({', '.join(splits.class_names[:5])}, ...) are not "
                        f"the {info['num_classes']} classes the backbone was trained on; extract with "
                        f"its own data set (drop --data/--root) or a copy of it")
    if splits.in_channels != int(info["in_channels"]):
        raise DataError(f"the data set's images have {splits.in_channels} channel(s) but the backbone "
                        f"takes {info['in_channels']}; extract with its own data set (drop --data/--root)")
    if list(splits.train_counts) != list(info["class_counts"]):
        console.warn(f"the training counts {list(splits.train_counts)} differ from the backbone's "
                     f"{list(info['class_counts'])}: this is not the subset it was trained on")
    return spec, splits


def make_parts(spec: DatasetSpec, splits, spatial: tuple[str, ...], views: int, seed: int) -> list[Part]:
    """The parts to extract, in order: train, val, bound, test (those the data set has), views."""
    def column(labels, indices) -> dict[str, np.ndarray]:
        n = len(labels)
        index = np.arange(n, dtype=np.int64) if indices is None else np.asarray(indices, np.int64)
        return {"labels": np.asarray(labels, np.int64), "source_index": index}

    parts = [Part("train", splits.train, column(splits.train_labels, splits.kept_indices), "train" in spatial)]
    if splits.val is not None:
        parts.append(Part("val", splits.val, column(splits.val_labels, splits.val_indices), "val" in spatial))
    if splits.bound is not None:  # balanced held-out images for the classification bound
        parts.append(Part("bound", splits.bound, column(splits.bound_labels, splits.bound_indices),
                          "bound" in spatial))
    parts.append(Part("test", splits.test, column(splits.test_labels, None), "test" in spatial))
    if views:
        n = parts[0].rows
        augmented = build_splits(spec, train_augment=True).train
        parts.append(Part(VIEWS, SeededViews(augmented, views, seed),
                          {"labels": np.tile(parts[0].columns["labels"], views),
                           "sample": np.tile(np.arange(n, dtype=np.int64), views),
                           "view": np.repeat(np.arange(views, dtype=np.int64), n)}, "train" in spatial))
    for part in parts:
        if len(part.dataset) != part.rows:
            raise DataError(f"the {part.name} split has {len(part.dataset)} images but {part.rows} labels")
    return parts
