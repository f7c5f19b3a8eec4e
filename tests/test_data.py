"""ltkit.data: long-tail profiles, LDAM-DRW selection, readers, validation split, errors."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from fakedata import (
    read_cifar_train_labels,
    write_cifar10,
    write_cifar100,
    write_fashion_mnist,
    write_imagefolder,
    write_list_files,
)
from ltkit.data import (
    DATASETS,
    DatasetSpec,
    build_splits,
    fashion_mnist,
    long_tail_counts,
    resolve_counts,
    spec_from_dict,
)
from ltkit.errors import ConfigError, DataError

GAMO = [4000, 2000, 1000, 750, 500, 350, 200, 100, 60, 40]


def ldam_kept_indices(labels: np.ndarray, imb_factor: float, img_max: int) -> np.ndarray:
    """LDAM-DRW's IMBALANCECIFAR selection, written as in their code (global np.random)."""
    cls_num = int(labels.max()) + 1
    img_num_per_cls = [int(img_max * (imb_factor ** (i / (cls_num - 1.0)))) for i in range(cls_num)]
    state = np.random.get_state()
    np.random.seed(0)
    selected = []
    for the_class, the_img_num in zip(np.unique(labels), img_num_per_cls):
        idx = np.where(labels == the_class)[0]
        np.random.shuffle(idx)
        selected.append(idx[:the_img_num])
    np.random.set_state(state)
    return np.concatenate(selected)


@pytest.fixture(scope="module")
def cifar10_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar10")
    write_cifar10(root, per_class=50, test_per_class=5)
    return root


def test_registry_names():
    assert DATASETS.names() == ["cifar10-lt", "cifar100-lt", "fashion-mnist-lt", "imagefolder", "synthetic"]


def test_cifar10_if100_exp_counts():
    assert long_tail_counts(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    cifar100 = long_tail_counts(500, 100, 100)
    assert (cifar100[0], cifar100[-1], len(cifar100)) == (500, 5, 100)


def test_step_profile():
    assert long_tail_counts(5000, 10, 100, "step") == [5000] * 5 + [50] * 5
    assert long_tail_counts(100, 5, 10, "step") == [100, 100, 10, 10, 10]  # odd K: the larger half is the tail


def test_explicit_counts_and_imbalance_one():
    sizes, names = [5000] * 10, [str(c) for c in range(10)]
    assert resolve_counts(sizes, names, imbalance=100, profile="exp", counts=GAMO) == GAMO
    assert resolve_counts([7, 5, 3], ["a", "b", "c"], imbalance=1, profile="exp", counts=None) == [7, 5, 3]
    assert long_tail_counts(5000, 10, 1) == [5000] * 10


@pytest.mark.parametrize("imb", [10.0, 1.0])
def test_cifar10_selection_equals_ldam(cifar10_root, imb):
    spec = DatasetSpec("cifar10-lt", root=str(cifar10_root), imbalance=imb, val_per_class=0)
    splits = build_splits(spec)
    labels = read_cifar_train_labels(cifar10_root / "cifar-10-batches-py")
    expected = ldam_kept_indices(labels, 1 / imb, 50)
    np.testing.assert_array_equal(splits.kept_indices, expected)
    np.testing.assert_array_equal(splits.train_labels, labels[expected])
    assert splits.val is None and splits.train_counts == long_tail_counts(50, 10, imb)
    # the images are the stored rows, unchanged: data[kept[i]] is train item i
    data = []
    for i in range(1, 6):
        with open(cifar10_root / "cifar-10-batches-py" / f"data_batch_{i}", "rb") as f:
            data.append(pickle.load(f, encoding="latin1")["data"])
    data = np.concatenate(data).reshape(-1, 3, 32, 32)
    raw = build_splits(spec, train_augment=False).train.images  # (N, 3, 32, 32) uint8
    np.testing.assert_array_equal(raw.numpy(), data[expected])
    assert splits.class_names == [f"class{c}" for c in range(10)] and len(splits.test) == 50


def test_cifar100_selection_equals_ldam(tmp_path):
    write_cifar100(tmp_path, per_class=5, test_per_class=2)
    splits = build_splits(DatasetSpec("cifar100-lt", root=str(tmp_path), imbalance=5, val_per_class=0))
    labels = read_cifar_train_labels(tmp_path / "cifar-100-python")
    np.testing.assert_array_equal(splits.kept_indices, ldam_kept_indices(labels, 1 / 5, 5))
    assert splits.class_names[:2] == ["fine0", "fine1"] and len(splits.test) == 200
    assert splits.train[0][0].shape == (3, 32, 32)


def test_validation_never_overlaps_train(cifar10_root):
    spec = DatasetSpec("cifar10-lt", root=str(cifar10_root), imbalance=10, val_per_class=5)
    splits = build_splits(spec)
    published = ldam_kept_indices(read_cifar_train_labels(cifar10_root / "cifar-10-batches-py"), 0.1, 50)
    assert not set(splits.kept_indices) & set(splits.val_indices)
    assert set(splits.kept_indices) <= set(published)
    assert np.bincount(splits.val_labels).tolist() == [5] * 10 and len(splits.val) == 50
    # the head class keeps all 50 images, so it gives 5 of them to val; the others lose none
    assert splits.train_counts == [45] + long_tail_counts(50, 10, 10)[1:]
    assert splits.train_counts == np.bincount(splits.train_labels).tolist()


def test_cifar_errors(tmp_path, cifar10_root):
    with pytest.raises(DataError, match="--download"):
        build_splits(DatasetSpec("cifar10-lt", root=str(tmp_path / "nowhere")))
    with pytest.raises(DataError, match="empty"):
        build_splits(DatasetSpec("cifar10-lt", root=str(tmp_path)))
    with pytest.raises(ConfigError, match="10 classes"):
        build_splits(DatasetSpec("cifar10-lt", root=str(cifar10_root), counts=[5, 4, 3]))
    with pytest.raises(ConfigError, match="which has 50"):
        build_splits(DatasetSpec("cifar10-lt", root=str(cifar10_root), counts=[60] + [5] * 9))
    with pytest.raises(ConfigError, match="leaves none"):
        build_splits(DatasetSpec("cifar10-lt", root=str(cifar10_root), imbalance=1, val_per_class=50))


@pytest.mark.parametrize("spec, error", [
    (DatasetSpec("cifar10-lt", imbalance=0.5), "imbalance must be >= 1"),
    (DatasetSpec("cifar10-lt", counts=[5, 0, 3]), "positive"),
    (DatasetSpec("cifar10-lt", profile="linear"), "valid profiles: exp, step"),
    (DatasetSpec("cifar10-lt", val_per_class=-1), "val_per_class"),
    (DatasetSpec("imagenet-lt"), "valid names: cifar10-lt"),
    (DatasetSpec("cifar10-lt", download=True), "--download needs --root"),
    (DatasetSpec("synthetic", num_classes=1), "num_classes must be 2-100"),
])
def test_bad_spec_raises_config_error(spec, error):
    with pytest.raises(ConfigError, match=error) as info:
        build_splits(spec)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("gz, torchvision_layout", [(True, False), (False, False), (True, True)])
def test_fashion_mnist_reader(tmp_path, gz, torchvision_layout):
    write_fashion_mnist(tmp_path, per_class=30, test_per_class=5, gz=gz, torchvision_layout=torchvision_layout)
    splits = build_splits(DatasetSpec("fashion-mnist-lt", root=str(tmp_path), imbalance=1, val_per_class=0))
    assert splits.train_counts == [30] * 10 and len(splits.test) == 50
    assert splits.class_names[0] == "T-shirt/top" and splits.class_names[-1] == "Ankle boot"
    assert splits.in_channels == 1 and splits.train[0][0].shape == (1, 28, 28)
    # the same seed writes the same values, whatever the file layout: compare with the raw files
    ref = tmp_path / "ref"
    write_fashion_mnist(ref, per_class=30, test_per_class=5, gz=False)
    images = np.frombuffer((ref / "train-images-idx3-ubyte").read_bytes()[16:], np.uint8).reshape(-1, 28, 28)
    labels = np.frombuffer((ref / "train-labels-idx1-ubyte").read_bytes()[8:], np.uint8)
    loaded = build_splits(DatasetSpec("fashion-mnist-lt", root=str(tmp_path), imbalance=1, val_per_class=0),
                          train_augment=False).train
    np.testing.assert_array_equal(loaded.images[:, 0].numpy(), images[splits.kept_indices])
    np.testing.assert_array_equal(splits.train_labels, labels[splits.kept_indices])


def test_fashion_mnist_default_root_and_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEFAULT_ROOT", str(tmp_path / "absent"))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        build_splits(DatasetSpec("fashion-mnist-lt"))
    write_fashion_mnist(tmp_path / "default", per_class=10, test_per_class=2)
    monkeypatch.setattr(fashion_mnist, "DEFAULT_ROOT", str(tmp_path / "default"))
    spec = DatasetSpec("fashion-mnist-lt", imbalance=10, val_per_class=2)
    assert build_splits(spec).train_counts == [8] + long_tail_counts(10, 10, 10)[1:]
    assert spec.root == str(tmp_path / "default")  # recorded in the spec
    (tmp_path / "default" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="t10k-labels"):
        build_splits(spec)


def test_imagefolder_with_profile(tmp_path):
    write_imagefolder(tmp_path, counts=[6, 4, 3], test_per_class=2, size=12)
    splits = build_splits(DatasetSpec("imagefolder", root=str(tmp_path), imbalance=1, val_per_class=0,
                                      image_size=16))
    assert splits.class_names == ["c0", "c1", "c2"] and splits.train_counts == [6, 4, 3]
    image, label = splits.train[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and isinstance(label, int)
    assert splits.test[5][0].shape == (3, 16, 16) and splits.test_labels.tolist() == [0, 0, 1, 1, 2, 2]
    lt = build_splits(DatasetSpec("imagefolder", root=str(tmp_path), imbalance=3, val_per_class=0, image_size=16))
    assert lt.train_counts == long_tail_counts(6, 3, 3) == [6, 3, 2]


def test_imagefolder_val_folder(tmp_path):
    gray = write_imagefolder(tmp_path / "gray", counts=[4, 4], test_per_class=2, mode="L", splits=("train", "val"))
    splits = build_splits(DatasetSpec("imagefolder", root=str(gray), imbalance=1, val_per_class=1, image_size=8))
    assert splits.in_channels == 1 and splits.train[0][0].shape == (1, 8, 8)
    assert len(splits.test) == 4 and splits.train_counts == [3, 3] and len(splits.val_indices) == 2  # val from train
    both = write_imagefolder(tmp_path / "both", counts=[4, 4], test_per_class=3, splits=("train", "test", "val"))
    splits = build_splits(DatasetSpec("imagefolder", root=str(both), imbalance=1, val_per_class=1, image_size=8))
    assert splits.train_counts == [4, 4] and len(splits.val) == 6 and splits.val_indices is None  # own val/


def test_list_files(tmp_path):
    lists = write_list_files(tmp_path, counts=[5, 3], test_per_class=2, val_per_class=2)
    spec = DatasetSpec("imagefolder", root=str(tmp_path), imbalance=1, image_size=8, train_list="train.txt",
                       test_list=str(lists["test"]), val_list=str(lists["val"]))
    splits = build_splits(spec)
    assert splits.class_names == ["c0", "c1"] and splits.train_counts == [5, 3]
    assert len(splits.val) == 4 and len(splits.test) == 4 and splits.val[0][0].shape == (3, 8, 8)
    # Places-LT style: a leading "/" on the paths
    lines = [line for line in lists["train"].read_text().split("\n") if line]
    (tmp_path / "slash.txt").write_text("".join(f"/{line}\n" for line in lines))
    spec = dataclasses.replace(spec, train_list="slash.txt")
    assert build_splits(spec).train_counts == [5, 3]
    (tmp_path / "bad.txt").write_text("images/c0/train_000.png\n")
    with pytest.raises(DataError, match="bad.txt:1"):
        build_splits(dataclasses.replace(spec, train_list="bad.txt"))


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match="empty"):
        build_splits(DatasetSpec("imagefolder", root=str(tmp_path)))
    write_imagefolder(tmp_path, counts=[3, 3], test_per_class=1, size=8)
    spec = DatasetSpec("imagefolder", root=str(tmp_path), imbalance=1, val_per_class=0, image_size=8)
    broken = tmp_path / "test" / "c1" / "000.png"
    broken.write_bytes(b"not a png")
    splits = build_splits(spec)
    with pytest.raises(DataError, match="000.png"):
        splits.test[1]
    (tmp_path / "train" / "c2").mkdir()
    with pytest.raises(DataError, match="c2"):
        build_splits(spec)
    with pytest.raises(DataError, match="no train/"):
        build_splits(dataclasses.replace(spec, root=str(tmp_path / "test")))


def test_synthetic_is_deterministic_and_learnable():
    spec = DatasetSpec("synthetic", imbalance=10, n_max=40, test_per_class=10, val_per_class=5)
    a, b = build_splits(spec), build_splits(DatasetSpec(**dataclasses.asdict(spec)))
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.images, b.test.images)
    assert a.train_counts == [35] + long_tail_counts(40, 10, 10)[1:]
    other = build_splits(dataclasses.replace(spec, seed=1))
    assert not torch.equal(a.test.images, other.test.images)
    torch.manual_seed(3)
    first = [a.train[i][0] for i in range(5)]
    torch.manual_seed(3)
    assert all(torch.equal(x, b.train[i][0]) for i, x in enumerate(first))
    # separable: nearest class mean on raw test pixels, means from the balanced training pool
    full = build_splits(dataclasses.replace(spec, imbalance=1, val_per_class=0), train_augment=False)
    x = full.train.images.flatten(1).float()  # (N, C*H*W)
    means = torch.stack([x[torch.as_tensor(full.train_labels == c)].mean(0) for c in range(10)])  # (K, D)
    pred = torch.cdist(full.test.images.flatten(1).float(), means).argmin(1)
    assert (pred.numpy() == full.test_labels).mean() > 0.9


def test_transforms_augment_train_only():
    splits = build_splits(DatasetSpec("synthetic", imbalance=1, n_max=5, test_per_class=2, val_per_class=1))
    mean, std = torch.tensor(splits.mean)[:, None, None], torch.tensor(splits.std)[:, None, None]
    expected = (splits.test.images[0].float() / 255 - mean) / std  # (C, H, W)
    torch.testing.assert_close(splits.test[0][0], expected)
    torch.testing.assert_close(splits.val[0][0], (splits.val.images[0].float() / 255 - mean) / std)
    torch.manual_seed(0)
    views = torch.stack([splits.train[0][0] for _ in range(8)])  # (8, C, H, W): random crops differ
    assert not all(torch.equal(views[0], v) for v in views[1:])
    plain = build_splits(DatasetSpec("synthetic", imbalance=1, n_max=5, test_per_class=2, val_per_class=1),
                         train_augment=False)
    assert torch.equal(plain.train[0][0], plain.train[0][0])


def test_spec_round_trip():
    spec = DatasetSpec("imagefolder", root="/data", counts=GAMO, image_size=64, mean=[0.5], std=[0.25])
    assert spec_from_dict(dataclasses.asdict(spec)) == spec
    with pytest.raises(ConfigError, match="unknown data set spec field"):
        spec_from_dict({"name": "synthetic", "colour": "red"})
    with pytest.raises(ConfigError, match="needs a 'name'"):
        spec_from_dict({"root": "/data"})
    with pytest.raises(ConfigError, match="one per channel"):
        build_splits(DatasetSpec("synthetic", n_max=4, test_per_class=1, val_per_class=0, mean=[0.5]))


@pytest.mark.slow
@pytest.mark.skipif(not Path(fashion_mnist.DEFAULT_ROOT).is_dir(), reason="real Fashion-MNIST not installed")
def test_real_fashion_mnist_if100():
    splits = build_splits(DatasetSpec("fashion-mnist-lt", imbalance=100, val_per_class=20))
    assert splits.train_counts == [5980, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60]
    assert len(splits.val) == 200 and len(splits.test) == 10000
    assert np.bincount(splits.test_labels).tolist() == [1000] * 10


def test_bound_split_is_balanced_and_disjoint_from_train_and_val():
    from ltkit.data.profile import select_long_tail

    # class 0 keeps all 30 images (the head of the profile): its bound and val come out of them
    labels = np.repeat(np.arange(3), 30)
    sel = select_long_tail(labels, [30, 12, 5], val_per_class=4, bound_per_class=6, seed=0)
    assert np.bincount(labels[sel.bound], minlength=3).tolist() == [6, 6, 6]
    assert np.bincount(labels[sel.val], minlength=3).tolist() == [4, 4, 4]
    assert sel.train_counts == [20, 12, 5]  # only the head, whose pool is short, trains on fewer
    parts = [set(sel.train.tolist()), set(sel.val.tolist()), set(sel.bound.tolist())]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    # a bound never moves the validation split or the other classes' training images
    plain = select_long_tail(labels, [30, 12, 5], val_per_class=4, seed=0)
    assert np.array_equal(plain.val, sel.val)
    assert np.array_equal(plain.train[26:], sel.train[20:])  # plain: the head trains on 30 - 4
    with pytest.raises(ConfigError, match="leaves none to train on"):
        select_long_tail(labels, [30, 12, 5], val_per_class=10, bound_per_class=20, seed=0)


# ---- list-file labels are checked before anything is sized by them (docs/reliability.md) ------

def test_list_file_labels_are_checked_before_use_in_one_short_line(tmp_path):
    from typer.testing import CliRunner

    from ltkit.cli import app
    from test_reliability import assert_refused, snapshot

    lists = write_list_files(tmp_path / "lists", [5, 3], test_per_class=1, size=8)
    train = lists["train"].read_text().splitlines()  # 8 lines: 5 of class 0, then 3 of class 1

    def list_file(name: str, lines: list[str]) -> str:
        (tmp_path / name).write_text("\n".join(lines) + "\n")
        return str(tmp_path / name)

    huge = list_file("huge.txt", [*train[:2], "images/c0/train_002.png 1000000000", *train[3:]])
    million = list_file("million.txt", [*train[:6], "images/c1/train_001.png 1000000"])
    gaps = list_file("gaps.txt", [f"{line.rsplit(maxsplit=1)[0]} {0 if i < 5 else 7}" for i, line in enumerate(train)])
    many_gaps = list_file("many.txt", [f"images/c0/train_000.png {0 if i == 0 else 39}" for i in range(40)])
    test_huge = list_file("test_huge.txt", ["images/c0/test_000.png 0", "images/c1/test_000.png 1000000000"])
    common = ["train-backbone", "--data", "imagefolder", "--root", str(tmp_path / "lists"), "--imbalance", "1",
              "--val-per-class", "0", "--image-size", "8", "--epochs", "1", "--device", "cpu",
              "--out", str(tmp_path / "b.pt"), "--quiet"]
    before = snapshot(tmp_path)
    for train_list, test_list, needle in [
        (huge, lists["test"], "huge.txt:3: label 1000000000 is not a class index below 8"),
        (million, lists["test"], "million.txt:7: label 1000000"),
        (gaps, lists["test"], "no image of class(es) 1, 2, 3, 4, 5 and 1 more of 0..7"),
        (many_gaps, lists["test"], "no image of class(es) 1, 2, 3, 4, 5 and 33 more of 0..39"),
        (lists["train"], test_huge, "test_huge.txt:2: label 1000000000 is not a class index below 2"),
    ]:
        result = CliRunner().invoke(app, [*common, "--train-list", str(train_list), "--test-list", str(test_list)])
        assert_refused(result, needle, folder=tmp_path, before=before)
        assert len(result.stderr) < 300, result.stderr  # one short line, however many classes


def test_read_list_accepts_dense_labels(tmp_path):
    from ltkit.data.imagefolder import read_list

    lists = write_list_files(tmp_path, [3, 2, 1], test_per_class=1, size=8)
    paths, labels = read_list(tmp_path, str(lists["train"]))
    assert labels.tolist() == [0, 0, 0, 1, 1, 2] and all(Path(p).is_file() for p in paths)
    with pytest.raises(DataError, match=r"test.txt:3: label 2 is not a class index below 2"):
        read_list(tmp_path, str(lists["test"]), classes=2)
