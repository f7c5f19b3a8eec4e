"""A user's own data with the defaults: trained as given (no profile cut), a capped validation
share that a small class cannot stop, and the images' own size; explicit options still win."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from entrypoint import run_main
from fakedata import write_imagefolder, write_list_files, write_png
from ltkit.data import DatasetSpec, build_splits, spec_from_dict
from ltkit.data.profile import auto_val_counts
from ltkit.errors import ConfigError
from test_train import run_cli

COUNTS = [15, 60, 40, 5]  # the first class is small: an exp profile with n_max 60 cannot be cut from it
FAST = ["--epochs", "1", "--batch-size", "64", "--device", "cpu"]


def test_auto_validation_counts_on_their_boundaries():
    sizes = [5, 6, 9, 10, 15, 19, 20, 199, 200, 201, 300]
    assert auto_val_counts(sizes) == [0, 1, 1, 1, 1, 1, 2, 19, 20, 20, 20]
    for size, val in zip(sizes, auto_val_counts(sizes)):
        assert val == 0 or size - val >= 5  # never fewer than five left to train on


def test_a_folder_trains_as_given_with_no_option(tmp_path):
    root = write_imagefolder(tmp_path / "data", COUNTS, size=28, mode="L")
    out = tmp_path / "b.pt"
    args = ["train-backbone", "--data", "imagefolder", "--root", str(root), *FAST, "--out", str(out)]
    result = run_cli(*args)
    assert result.exit_code == 0, result.stderr
    assert "image size 28 px: the images' own (28x28" in result.stderr
    assert "validation split: 11 images" in result.stderr and "1 class(es) of under 6" in result.stderr
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["class_counts"] == [14, 54, 36, 5]  # every image but the validation share
    assert ckpt["dataset"]["imbalance"] == 1 and ckpt["dataset"]["image_size"] == 28
    assert ckpt["dataset"]["val_per_class"] is None  # the automatic share, recorded as such
    again = run_cli(*args)
    assert again.exit_code == 0 and "reusing" in again.stderr, again.stderr


def test_list_files_train_as_given_with_no_option(tmp_path):
    lists = write_list_files(tmp_path / "lists", COUNTS, size=20)
    splits = build_splits(DatasetSpec("imagefolder", root=str(tmp_path / "lists"), train_list=str(lists["train"]),
                                      test_list=str(lists["test"])))
    assert splits.train_counts == [14, 54, 36, 5] and splits.image_size == 20
    assert len(splits.val_labels) == 11 and any("image size 20 px" in note for note in splits.chosen)


def test_explicit_options_win_and_mixed_sizes_default_to_224(tmp_path):
    with pytest.raises(ConfigError, match="asks for 60 images of class 'c0', which has 15"):  # asked for: cut
        build_splits(DatasetSpec("imagefolder", root=str(write_imagefolder(tmp_path / "small", COUNTS)),
                                 imbalance=100))
    root = write_imagefolder(tmp_path / "data", [60, 45, 30, 25], size=28, mode="L")
    splits = build_splits(DatasetSpec("imagefolder", root=str(root), image_size=16, imbalance=3, val_per_class=2))
    assert splits.image_size == 16 and splits.chosen == []
    assert splits.train_counts == [58, 41, 28, 20]  # the exp profile 60, 41, 28, 20; the head gives 2 to val
    assert len(splits.val_labels) == 8
    write_png(root / "train" / "c1" / "big.png", size=40, mode="L")
    mixed = build_splits(DatasetSpec("imagefolder", root=str(root), val_per_class=0))
    assert mixed.image_size == 224 and "differ in size (28x28, 40x40" in mixed.chosen[0]


def test_a_too_large_explicit_validation_split_is_still_refused(tmp_path):
    root = write_imagefolder(tmp_path / "data", COUNTS, size=12)
    with pytest.raises(Exception, match="leaves none to train on"):
        build_splits(DatasetSpec("imagefolder", root=str(root), val_per_class=5))


def test_the_lt_data_sets_keep_their_defaults_and_old_specs_keep_their_meaning():
    for name in ("fashion-mnist-lt", "cifar10-lt", "synthetic"):
        spec = DatasetSpec(name)
        assert spec.imbalance == 100 and spec.val_per_class == 20
    folder = DatasetSpec("imagefolder", root="/x")
    assert folder.imbalance == 1 and folder.val_per_class is None and folder.image_size is None
    saved = dataclasses.asdict(DatasetSpec("imagefolder", root="/x", imbalance=100, val_per_class=20))
    old = spec_from_dict(saved)  # saved before the native default: None meant 224
    assert old.image_size == 224 and old.imbalance == 100 and old.val_per_class == 20


def test_print_config_leaves_the_source_defaults_to_the_source(tmp_path, capsys, monkeypatch):
    code, out, err = run_main(["train-backbone", "--data", "imagefolder", "--root", str(tmp_path), "--print-config"],
                              capsys, monkeypatch)
    assert code == 0, err
    assert 'data = "imagefolder"' in out and "imbalance" not in out and "val-per-class" not in out
