"""Long-tail profiles and the LDAM-DRW selection of which training images are kept.

Counts (Cao et al., LDAM-DRW, `IMBALANCECIFAR.get_img_num_per_cls`): with n_max the images
per class of the source and IF the imbalance factor,
- "exp": class i keeps ``int(n_max * (1 / IF) ** (i / (K - 1)))`` images;
- "step": the first K // 2 classes keep n_max, the rest ``int(n_max * (1 / IF))``;
- explicit counts (e.g. GAMO's 4000,2000,...,40) override both.

Selection (`IMBALANCECIFAR.gen_imbalanced_data`): ``rng = np.random.RandomState(seed)``; for
each class c in order 0..K-1, ``idx = np.where(labels == c)[0]; rng.shuffle(idx)`` and the
first n_c entries are kept. With seed 0 this is the same sequence as their
``np.random.seed(0); np.random.shuffle(idx)``, so the kept images are exactly theirs.

Validation: N = val_per_class images of each class are taken from the END of its shuffled
list, i.e. from the images the profile left out, so the published training subset is
untouched. A class that left out fewer than N images (the head class, which keeps all of its
images) gives the missing ones from the end of its kept list and trains on that many fewer;
`Selection.train_counts` are the true training counts. With N = 0 there is no validation
split and the training subset is exactly the published one.

A data set of one's own with no --val-per-class (`auto_val_counts`): each class gives
``min(VAL_CAP, max(1, floor(VAL_SHARE * m)))`` of its m images, and none when that would leave
it fewer than MIN_TRAIN to train on (a class of 15 gives 1; of 300, 20; of 5, none: its
accuracy is then left out of the validation means, never counted as 0).

Bound: B = bound_per_class images of each class are taken the same way, just before the
validation images (``idx[m - N - B : m - N]``), for the empirical classification bound
(a head trained on a balanced split the backbone never saw). Only a class whose left-out pool
is shorter than N + B (under LDAM-DRW the head class, which keeps all its images) trains on
fewer images; every split stays disjoint from the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ltkit.data.spec import brief
from ltkit.errors import ConfigError, DataError


def long_tail_counts(n_max: int, num_classes: int, imbalance: float, profile: str = "exp") -> list[int]:
    """Per-class image counts of the LDAM-DRW profile (class 0 is the head)."""
    if imbalance < 1:
        raise ConfigError(f"imbalance must be >= 1 (n_max / n_min; 1 = balanced), got {imbalance}")
    factor = 1.0 / imbalance  # LDAM-DRW's imb_factor; kept as a product so the counts match theirs
    k = num_classes
    if profile == "exp":
        if k == 1:
            return [int(n_max)]
        return [int(n_max * factor ** (i / (k - 1.0))) for i in range(k)]
    if profile == "step":
        head = k // 2
        return [int(n_max)] * head + [int(n_max * factor)] * (k - head)
    raise ConfigError(f"unknown profile {profile!r}; valid profiles: exp, step")


def resolve_counts(
    class_sizes: list[int],
    class_names: list[str],
    *,
    imbalance: float,
    profile: str,
    counts: list[int] | None,
) -> list[int]:
    """The per-class counts to keep, checked against what each class of the source has.

    n_max is the largest class. `imbalance == 1` (with no explicit counts) keeps every image,
    also of a source whose classes differ in size.
    """
    k = len(class_sizes)
    if any(size == 0 for size in class_sizes):
        empty = [class_names[c] for c, size in enumerate(class_sizes) if size == 0]
        raise DataError(f"class(es) {brief(empty)} have no training images; every class needs some")
    if counts is not None:
        if len(counts) != k:
            raise ConfigError(f"counts has {len(counts)} values but the data set has {k} classes; "
                              "give one count per class")
        wanted = list(counts)
        source = "counts"
    elif imbalance == 1:
        return list(class_sizes)
    else:
        wanted = long_tail_counts(max(class_sizes), k, imbalance, profile)
        source = f"the {profile} profile with imbalance {imbalance:g}"
    for c, (n, size) in enumerate(zip(wanted, class_sizes)):
        if n <= 0:
            raise ConfigError(f"{source} gives class {class_names[c]!r} {n} images; "
                              "use a smaller imbalance or explicit counts > 0")
        if n > size:
            raise ConfigError(f"{source} asks for {n} images of class {class_names[c]!r}, which has {size}; "
                              "lower the count or use --imbalance 1")
    return wanted


VAL_SHARE = 0.1  # automatic validation split: this share of each class ...
VAL_CAP = 20     # ... at most this many images (what the -lt data sets take) ...
MIN_TRAIN = 5    # ... and never leaving a class fewer than this many to train on


def auto_val_counts(class_sizes: list[int]) -> list[int]:
    """Validation images per class of a data set of one's own (module docstring)."""
    wanted = [min(VAL_CAP, max(1, int(VAL_SHARE * m))) for m in class_sizes]
    return [v if m - v >= MIN_TRAIN else 0 for v, m in zip(wanted, class_sizes)]


@dataclass
class Selection:
    """Which source training images go where; indices are rows of the source training set."""

    published: np.ndarray  # (sum counts,) int64, the kept subset of the protocol, class by class
    train: np.ndarray  # (N,) int64, the images trained on (published minus any val taken from it)
    val: np.ndarray | None  # (sum of the val counts,) int64, class by class; None when there are none
    train_counts: list[int]  # images per class in `train`
    bound: np.ndarray | None = None  # (K * bound_per_class,) int64, class by class; None when bound_per_class is 0


def select_long_tail(labels: np.ndarray, counts: list[int], *, val_per_class: int | list[int] = 0,
                     bound_per_class: int = 0, seed: int = 0,
                     class_names: list[str] | None = None) -> Selection:
    """LDAM-DRW's kept subset of `labels` (N,) for `counts`, plus validation and bound splits
    (docstring above); `val_per_class`: one count for every class, or one per class."""
    rng = np.random.RandomState(seed)
    vals = val_per_class if isinstance(val_per_class, list) else [val_per_class] * len(counts)
    published, train, val, bound, train_counts = [], [], [], [], []
    for c, (n, v) in enumerate(zip(counts, vals)):
        idx = np.where(labels == c)[0]  # (m,) rows of class c, in source order
        rng.shuffle(idx)  # same draws as LDAM-DRW: every class is shuffled, in class order
        m, held = len(idx), v + bound_per_class  # images of the class never trained on
        if held >= m:
            name = class_names[c] if class_names else str(c)
            with_bound = f" with bound_per_class {bound_per_class}" if bound_per_class else ""
            raise ConfigError(f"class {name!r} has {m} training images; val_per_class {v}"
                              f"{with_bound} leaves none to train on; lower --val-per-class")
        published.append(idx[:n])
        n_train = min(n, m - held)  # the head class gives up images it would have kept
        train.append(idx[:n_train])
        train_counts.append(int(n_train))
        val.append(idx[m - v:])
        bound.append(idx[m - held:m - v])
    as_index = lambda parts: np.concatenate(parts).astype(np.int64)  # noqa: E731
    return Selection(published=as_index(published), train=as_index(train),
                     val=as_index(val) if any(vals) else None, train_counts=train_counts,
                     bound=as_index(bound) if bound_per_class else None)
