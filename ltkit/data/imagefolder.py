"""Image files on disk, in class folders or in list files, optionally with a long-tail profile.

Folders: ``ROOT/train/<class>/*`` and ``ROOT/test/<class>/*``; class order is the sorted
folder names of train/ (torchvision's ImageFolder order). With no test/, ``ROOT/val/`` is the
test split (and a validation split, if any, is carved out of train by val_per_class); with
both test/ and val/, val/ is the data set's own validation split.

List files (ImageNet-LT / Places-LT format): spec.train_list, spec.test_list and optionally
spec.val_list, each with lines ``relative/path.jpg label`` (paths relative to ROOT; a leading
"/" is dropped, as in Places-LT's lists). A list file path is used as given, else looked up
under ROOT. With no test_list, val_list is the test split. K = largest train label + 1,
and every class 0..K-1 must have a training image (labels are checked before anything is
sized by them: a stray label of 10^9 is one line naming its file and line). Class names are
the images' parent folder names when those are distinct per label, else the label numbers.

Images are decoded on access (grayscale or colour: spec.channels, or detected from the first
training image) and resized by the transform to spec.image_size; by default the images' own
size when they share one (`native_size`: a folder of 28-pixel images trains at 28), else 224.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from ltkit.data.datasets import FilePool, image_channels, image_size
from ltkit.data.sources import DATASETS, SourceData, existing_root
from ltkit.data.spec import DatasetSpec, brief
from ltkit.errors import ConfigError, DataError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
GRAY_MEAN, GRAY_STD = (0.449,), (0.226,)  # the average of ImageNet's channels
Files = tuple[list[str], np.ndarray]  # image paths, labels (N,) int64
DEFAULT_SIZE = 224  # image side when the images differ in size (the ImageNet recipe)
SIZE_SAMPLE = 256  # training images whose size is read to find the default (headers only)
MIN_SIZE = 8  # the smallest side handed out (smaller images are scaled up to it)
LAYOUT = "expected ROOT/train/<class>/*.png and ROOT/test/<class>/* (or val/), or --train-list/--test-list"


def _scan_folder(folder: Path, class_to_idx: dict[str, int]) -> Files:
    """Paths and labels of the images in folder/<class>/ (classes must be those of train/)."""
    try:
        names, _ = find_classes(folder)
    except FileNotFoundError:
        raise DataError(f"no class folders in {folder}; {LAYOUT}") from None
    foreign = sorted(set(names) - set(class_to_idx))
    if foreign:
        raise DataError(f"{folder} has class folder(s) {', '.join(foreign[:5])} that train/ does not have")
    try:
        samples = make_dataset(folder, {n: class_to_idx[n] for n in names}, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as e:
        raise DataError(f"{folder}: {e}".strip()) from None
    return [p for p, _ in samples], np.array([c for _, c in samples], dtype=np.int64)


def _from_folders(root: Path) -> tuple[Files, Files, Files | None, list[str]]:
    if not (root / "train").is_dir():
        raise DataError(f"no train/ folder under {root}; {LAYOUT}")
    try:
        names, class_to_idx = find_classes(root / "train")
    except FileNotFoundError:
        raise DataError(f"no class folders in {root / 'train'}; {LAYOUT}") from None
    train = _scan_folder(root / "train", class_to_idx)
    has_test, has_val = (root / "test").is_dir(), (root / "val").is_dir()
    if not has_test and not has_val:
        raise DataError(f"no test/ or val/ folder under {root}; {LAYOUT}")
    test = _scan_folder(root / ("test" if has_test else "val"), class_to_idx)
    own_val = _scan_folder(root / "val", class_to_idx) if has_test and has_val else None
    return train, test, own_val, names


def _list_path(root: Path, given: str) -> Path:
    path = Path(given).expanduser()
    if not path.is_file() and (root / given).is_file():
        path = root / given
    if not path.is_file():
        raise DataError(f"list file {given} not found (as given, nor under {root})")
    return path


def read_list(root: Path, given: str, classes: int | None = None) -> Files:
    """Paths (under root) and labels of a `relative/path.jpg label` list file.

    Labels are class indices: below `classes` when given (an evaluation list, against the
    train list's classes), else below the number of entries (a train list: every class needs
    an image), so a stray huge label is refused here, before anything is sized by it."""
    path = _list_path(root, given)
    lines = [(n, line) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    if not lines:
        raise DataError(f"list file {path} has no entries")
    bound = len(lines) if classes is None else classes
    paths, labels = [], np.empty(len(lines), dtype=np.int64)
    for i, (number, line) in enumerate(lines):
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or int(parts[1]) < 0:
            raise DataError(f"{path}:{number}: expected 'relative/path.jpg label', got {line.strip()[:80]!r}")
        label = int(parts[1])
        if label >= bound:
            raise DataError(f"{path}:{number}: label {label} is not a class index below {bound} "
                            + ("(the train list's classes)" if classes is not None
                               else f"(the list's {bound} entries; labels number the classes 0..K-1)"))
        paths.append(str(root / parts[0].strip().lstrip("/")))
        labels[i] = label
    return paths, labels


def _dense_classes(path: Path, labels: np.ndarray) -> int:
    """K, the train list's class count: its labels must be exactly 0..K-1."""
    k = int(labels.max()) + 1
    missing = np.flatnonzero(np.bincount(labels, minlength=k) == 0)  # (M,)
    if len(missing):
        raise DataError(f"{path}: no image of class(es) {brief(missing.tolist())} of 0..{k - 1}; "
                        "labels must number the classes 0..K-1, each with training images")
    return k


def _names_from_paths(paths: list[str], labels: np.ndarray, k: int) -> list[str]:
    """Parent folder name of each label's first image, when that names every class distinctly."""
    names: dict[int, str] = {}
    for p, c in zip(paths, labels):
        names.setdefault(int(c), Path(p).parent.name)
    if len(names) == k and len(set(names.values())) == k:
        return [names[c] for c in range(k)]
    return [str(c) for c in range(k)]


def _from_lists(root: Path, spec: DatasetSpec) -> tuple[Files, Files, Files | None, list[str]]:
    if spec.test_list is None and spec.val_list is None:
        raise ConfigError("--train-list needs --test-list (or --val-list) to give the evaluation images")
    train = read_list(root, spec.train_list)
    k = _dense_classes(_list_path(root, spec.train_list), train[1])
    test = read_list(root, spec.test_list or spec.val_list, classes=k)
    own_val = read_list(root, spec.val_list, classes=k) if spec.test_list and spec.val_list else None
    return train, test, own_val, _names_from_paths(*train, k)


@DATASETS.register("imagefolder")
def load_imagefolder(spec: DatasetSpec) -> SourceData:
    root = existing_root(spec, LAYOUT)
    if spec.train_list is not None:
        train, test, own_val, names = _from_lists(root, spec)
    else:
        if spec.test_list or spec.val_list:
            raise ConfigError("--test-list/--val-list need --train-list too")
        train, test, own_val, names = _from_folders(root)
    channels = spec.channels or image_channels(train[0][0])
    gray = channels == 1
    size, chosen = (spec.image_size, []) if spec.image_size else native_size(train[0])
    return SourceData(
        train=FilePool(*train, channels), test=FilePool(*test, channels),
        own_val=FilePool(*own_val, channels) if own_val else None,
        class_names=names, in_channels=channels, native_size=None, image_size=size,
        mean=GRAY_MEAN if gray else IMAGENET_MEAN, std=GRAY_STD if gray else IMAGENET_STD,
        augment="resized-crop", chosen=chosen)


def native_size(paths: list[str]) -> tuple[int, list[str]]:
    """The default image side: the training images' own (their shorter side) when the ones
    sampled, up to SIZE_SAMPLE spread over the set, all share one size; else DEFAULT_SIZE.
    Only headers are read. With what was chosen, said in words."""
    picks = np.unique(np.linspace(0, len(paths) - 1, min(SIZE_SAMPLE, len(paths))).astype(np.int64))
    sizes = sorted({image_size(paths[i]) for i in picks})
    seen = f"{len(picks)} training image{'s' if len(picks) > 1 else ''}"
    if len(sizes) == 1:
        w, h = sizes[0]
        side = max(min(w, h), MIN_SIZE)
        return side, [f"image size {side} px: the images' own ({w}x{h}, all of {seen} sampled; "
                      "--image-size to choose)"]
    shown = ", ".join(f"{w}x{h}" for w, h in sizes[:3]) + (", ..." if len(sizes) > 3 else "")
    return DEFAULT_SIZE, [f"image size {DEFAULT_SIZE} px: the images differ in size ({shown} among {seen} "
                          "sampled; --image-size to choose)"]
