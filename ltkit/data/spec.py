"""`DatasetSpec` (what data to use, as plain values) and `Splits` (what `build_splits` returns).

The spec is stored inside checkpoints and stores as a plain dict: `dataclasses.asdict(spec)`
writes it and `spec_from_dict(d)` reads it back, checking every field.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
from torch.utils.data import Dataset

from ltkit import choices
from ltkit.errors import ConfigError

PROFILES = choices.PROFILES
# A data set of one's own (folders, list files) is long-tailed as given, in alphabetical class
# order: no profile is cut from it unless asked for, and its validation split is a capped share.
OWN_DATA = frozenset({"imagefolder"})
DEFAULT_IMBALANCE = 100.0  # the -lt data sets and synthetic (LDAM-DRW's CIFAR-LT default)
DEFAULT_VAL_PER_CLASS = 20  # the -lt data sets and synthetic: taken from the images the profile left out
LEGACY_IMAGE_SIZE = 224  # imagefolder's image size when a saved spec records None (ltkit before the native default)
BRIEF = 5  # items a message lists before "and N more": every error stays one short line


def brief(items) -> str:
    """The first `BRIEF` items, comma-separated, then how many more there are."""
    items = [str(i) for i in items]
    more = f" and {len(items) - BRIEF} more" if len(items) > BRIEF else ""
    return ", ".join(items[:BRIEF]) + more


@dataclass
class DatasetSpec:
    """A data source and the long-tail profile put on its training set. Plain values only."""

    name: str  # registry name: cifar10-lt, cifar100-lt, fashion-mnist-lt, imagefolder, synthetic
    # data folder; None: the source's default (fashion-mnist: /usr/share/datasets/fashion-mnist)
    root: str | None = None
    # n_max / n_min, >= 1; 1 keeps every training image (typical: 10-200). None: the source's
    # default, 100 for the -lt data sets and synthetic, 1 for a data set of one's own (`OWN_DATA`)
    imbalance: float | None = None
    # exp: counts fall exponentially with the class index; step: half the classes at n_max, half at n_max / imbalance
    profile: str = "exp"
    counts: list[int] | None = None  # explicit per-class training counts; overrides imbalance and profile
    # validation images per class, from images the profile left out; 0: no validation split. None:
    # 20, or for a data set of one's own a share of each class with a cap (`ltkit.data.profile.auto_val_counts`)
    val_per_class: int | None = None
    bound_per_class: int = 0  # balanced 'bound' split: images per class held out like val (docs/phase2.md); 0: none
    download: bool = False  # fetch the files into `root` with torchvision first (cifar, fashion-mnist)
    train_list: str | None = None  # imagefolder: list file of "relative/path.jpg label" lines (ImageNet-LT format)
    val_list: str | None = None  # imagefolder: list file of the data set's own validation split
    test_list: str | None = None  # imagefolder: list file of the test split
    # side of the images handed out; None: native (synthetic: 16; imagefolder: the images' own when they
    # share one, else 224; a checkpoint saved before that default recorded None for 224)
    image_size: int | None = None
    channels: int | None = None  # 1 or 3; None: the source's own (imagefolder: detected from the first image)
    num_classes: int = 10  # synthetic: number of classes (2-10000)
    n_max: int = 200  # synthetic: generated training images per class, before the profile
    test_per_class: int = 50  # synthetic: generated test images per class
    seed: int = 0  # synthetic: seed of the generated images
    selection_seed: int = 0  # seed of the per-class shuffle that picks the kept images (LDAM-DRW uses 0)
    mean: list[float] | None = None  # normalisation mean per channel; None: the data set's own
    std: list[float] | None = None  # normalisation std per channel; None: the data set's own

    def __post_init__(self) -> None:
        """The source's defaults made explicit where they need no data (so they are recorded)."""
        own = self.name in OWN_DATA
        if self.imbalance is None:
            self.imbalance = 1.0 if own else DEFAULT_IMBALANCE
        if self.val_per_class is None and not own:
            self.val_per_class = DEFAULT_VAL_PER_CLASS


@dataclass
class Splits:
    """What `build_splits` returns: the three splits and what models and samplers need to know."""

    train: Dataset  # items: (image float32 (C, H, W), label int); class by class, LDAM-DRW order
    val: Dataset | None  # None when val_per_class is 0 (and the data set has no own val split)
    test: Dataset  # balanced: every test image of the source
    train_labels: np.ndarray  # (N,) int64, in train order (samplers use it)
    class_names: list[str]  # K names, index = label
    train_counts: list[int]  # images per class actually trained on
    in_channels: int  # 1 or 3
    image_size: int  # H == W of the images handed out
    kept_indices: np.ndarray | None  # (N,) int64, train item i is source training image kept_indices[i]
    val_indices: np.ndarray | None = None  # (V,) int64 source training indices of val; None: own val split or none
    val_labels: np.ndarray | None = None  # (V,) int64
    test_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (M,) int64
    bound: Dataset | None = None  # balanced held-out split for the classification bound; None: bound_per_class 0
    bound_indices: np.ndarray | None = None  # (B,) int64 source training indices of bound
    bound_labels: np.ndarray | None = None  # (B,) int64
    mean: tuple[float, ...] = ()  # normalisation applied to every split
    std: tuple[float, ...] = ()
    chosen: list[str] = field(default_factory=list)  # the data-dependent defaults taken, said once by the stage

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _int_list(name: str, value: object) -> list[int]:
    try:
        items = list(value)  # type: ignore[call-overload]
        out = [int(v) for v in items]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a list of integers, got {value!r}") from None
    if any(o != v for o, v in zip(out, items)):
        raise ConfigError(f"{name} must be whole numbers, got {value!r}")
    return out


def check_spec(spec: DatasetSpec) -> None:
    """Raise `ConfigError` for any field that cannot work, before touching the data."""
    if not isinstance(spec.imbalance, (int, float)) or not math.isfinite(spec.imbalance):
        raise ConfigError(f"imbalance must be a finite number >= 1, got {spec.imbalance!r}")
    if spec.imbalance < 1:
        raise ConfigError(f"imbalance must be >= 1 (n_max / n_min; 1 = balanced), got {spec.imbalance}")
    if spec.profile not in PROFILES:
        raise ConfigError(f"unknown profile {spec.profile!r}; valid profiles: {', '.join(PROFILES)}")
    if spec.counts is not None:
        spec.counts = _int_list("counts", spec.counts)
        bad = [c for c in spec.counts if c <= 0]
        if bad or not spec.counts:
            raise ConfigError(f"counts must be positive integers, one per class; got {brief(spec.counts)}")
    for name in ("val_per_class", "bound_per_class"):
        if name == "val_per_class" and spec.val_per_class is None and spec.name in OWN_DATA:
            continue  # the automatic share
        if not isinstance(getattr(spec, name), int) or getattr(spec, name) < 0:
            raise ConfigError(f"{name} must be a whole number >= 0, got {getattr(spec, name)!r}")
    if spec.image_size is not None and spec.image_size < 8:
        raise ConfigError(f"image_size must be at least 8 pixels, got {spec.image_size}")
    if spec.channels not in (None, 1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {spec.channels}")
    for name in ("mean", "std"):
        values = getattr(spec, name)
        if values is not None and (not values or any(not isinstance(v, (int, float)) for v in values)):
            raise ConfigError(f"{name} must be a list of numbers, one per channel; got {values!r}")
    if spec.std is not None and any(v <= 0 for v in spec.std):
        raise ConfigError(f"std values must be positive, got {spec.std}")


def spec_from_dict(d: dict) -> DatasetSpec:
    """The `DatasetSpec` that `dataclasses.asdict` wrote; unknown or missing keys -> ConfigError."""
    if not isinstance(d, dict):
        raise ConfigError(f"a data set spec must be a dict, got {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(DatasetSpec)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown data set spec field(s) {', '.join(unknown)}; "
                          f"valid fields: {', '.join(sorted(known))}")
    if "name" not in d:
        raise ConfigError("a data set spec needs a 'name' (e.g. cifar10-lt)")
    values = dict(d)
    if values["name"] in OWN_DATA and values.get("image_size") is None:
        values["image_size"] = LEGACY_IMAGE_SIZE  # saved before the native default: it was trained at 224
    for key in ("counts",):
        if values.get(key) is not None:
            values[key] = _int_list(key, values[key])
    for key in ("mean", "std"):
        if values.get(key) is not None:
            values[key] = [float(v) for v in values[key]]
    spec = DatasetSpec(**values)
    check_spec(spec)
    return spec
