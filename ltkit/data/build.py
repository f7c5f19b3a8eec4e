"""`build_splits`: a source's full data -> long-tailed train, validation and balanced test splits."""

from __future__ import annotations

import dataclasses

import numpy as np

from ltkit import console
from ltkit.data.profile import MIN_TRAIN, VAL_CAP, VAL_SHARE, auto_val_counts, resolve_counts, select_long_tail
from ltkit.data.sources import DATASETS, SourceData
from ltkit.data.spec import OWN_DATA, DatasetSpec, Splits, check_spec
from ltkit.data.transforms import make_transform
from ltkit.errors import ConfigError


def _normalisation(spec: DatasetSpec, source: SourceData) -> None:
    """Put the spec's mean/std (when given) on the source, checking one value per channel."""
    for name in ("mean", "std"):
        values = getattr(spec, name)
        if values is None:
            continue
        if len(values) != source.in_channels:
            raise ConfigError(f"{name} has {len(values)} values but {spec.name} has "
                              f"{source.in_channels} channel(s); give one per channel")
        setattr(source, name, tuple(float(v) for v in values))


def build_splits(spec: DatasetSpec, *, train_augment: bool = True, policy: str = "none") -> Splits:
    """Train / val / test datasets of `spec` (see `ltkit.data.profile` for the protocol).

    `train_augment=False` gives the training split with the evaluation transform (for extract);
    `policy` adds an automatic augmentation policy to the training transform (`POLICIES`).
    The validation split comes from the training images the profile left out, or, for an
    imagefolder source with its own val/ folder or val list, is that split; never trained on.
    """
    check_spec(spec)
    source = DATASETS.get(spec.name)(spec)
    _normalisation(spec, source)
    names = source.class_names
    labels = source.train.labels  # (N_source,) int64
    sizes = np.bincount(labels, minlength=len(names)).tolist()
    counts = resolve_counts(sizes, names, imbalance=spec.imbalance, profile=spec.profile, counts=spec.counts)
    chosen = list(source.chosen)
    if source.own_val is not None:
        carve: int | list[int] = 0  # an own val split is used as it is
    elif spec.val_per_class is None:  # a data set of one's own: a share of each class, capped
        carve = auto_val_counts(sizes)
        chosen.append(_auto_val_note(carve))
    else:
        carve = spec.val_per_class
    if spec.bound_per_class and source.own_val is not None:
        raise ConfigError("a bound split is carved from the training images the profile left out; "
                          "this data set brings its own validation split: drop --bound-per-class")
    selection = select_long_tail(labels, counts, val_per_class=carve, bound_per_class=spec.bound_per_class,
                                 seed=spec.selection_seed, class_names=names)

    train_tf = make_transform(source, train=train_augment, policy=policy)
    eval_tf = make_transform(source, train=False)
    val, val_labels = None, None
    if selection.val is not None:
        val = source.train.dataset(selection.val, eval_tf)
        val_labels = labels[selection.val]
    elif source.own_val is not None and spec.val_per_class != 0:
        val = source.own_val.dataset(None, eval_tf)
        val_labels = source.own_val.labels
    return Splits(
        train=source.train.dataset(selection.train, train_tf),
        val=val,
        test=source.test.dataset(None, eval_tf),
        train_labels=labels[selection.train],
        class_names=list(names),
        train_counts=selection.train_counts,
        in_channels=source.in_channels,
        image_size=source.image_size,
        kept_indices=selection.train,
        val_indices=selection.val,
        val_labels=val_labels,
        test_labels=source.test.labels,
        mean=source.mean,
        std=source.std,
        bound=None if selection.bound is None else source.train.dataset(selection.bound, eval_tf),
        bound_indices=selection.bound,
        bound_labels=None if selection.bound is None else labels[selection.bound],
        chosen=chosen,
    )


def _auto_val_note(carve: list[int]) -> str:
    none = sum(v == 0 for v in carve)
    return (f"validation split: {sum(carve)} images, {VAL_SHARE:.0%} of each class and at most {VAL_CAP}"
            + (f"; {none} class(es) of under {MIN_TRAIN + 1} images give none" if none else "")
            + " (--val-per-class N to choose, 0 for none)")


def chosen_spec(spec: DatasetSpec, splits: Splits) -> DatasetSpec:
    """Say the data-dependent defaults `build_splits` took (image size, validation share) on
    stderr; for a data set of one's own, ``spec`` with the image size chosen, so that a
    checkpoint records it and a rerun or `extract` uses it (a saved spec without one: 224)."""
    for note in splits.chosen:
        console.log(note)
    if spec.name in OWN_DATA and spec.image_size is None:
        return dataclasses.replace(spec, image_size=splits.image_size)
    return spec
