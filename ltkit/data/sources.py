"""The registry of data sources and what a source hands to `build_splits`.

A source is a function ``load(spec) -> SourceData`` registered under its name in `DATASETS`;
it reads (or generates) the full training and test sets and knows nothing of long-tail
profiles, validation splits or augmentation, which `build_splits` applies the same way to all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ltkit import choices
from ltkit.data.datasets import Pool
from ltkit.data.spec import DatasetSpec
from ltkit.errors import DataError
from ltkit.registry import Registry


@dataclass
class SourceData:
    """A source's full splits, before any long-tail profile is put on the training set."""

    train: Pool  # every training image of the source
    test: Pool  # every test image (the test set stays balanced)
    own_val: Pool | None  # the data set's own validation split, when it has one (imagefolder)
    class_names: list[str]  # K names, index = label
    in_channels: int  # 1 or 3
    native_size: int | None  # side of the stored images when they all share one (in memory), else None
    image_size: int  # side of the images handed out
    mean: tuple[float, ...]  # normalisation per channel
    std: tuple[float, ...]
    augment: str  # train-time augmentation kind: "crop" (pad + random crop + flip) or "resized-crop"
    crop_padding: int = 4  # padding of the "crop" augmentation, in pixels
    flip: bool = True  # random horizontal flips at train time
    chosen: list[str] = field(default_factory=list)  # data-dependent defaults the source took (said on stderr)


DATASETS: Registry[Callable[[DatasetSpec], SourceData]] = Registry("data set", declared=choices.DATASETS)


def existing_root(spec: DatasetSpec, how_to_get: str) -> Path:
    """`spec.root` as a Path that exists and is not empty, or a DataError that says how to get the data."""
    if spec.root is None:
        raise DataError(f"{spec.name} needs a data root: pass --root DIR; {how_to_get}")
    root = Path(spec.root).expanduser()
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist or is not a folder; {how_to_get}")
    if not any(root.iterdir()):
        raise DataError(f"data root {root} is empty; {how_to_get}")
    return root
