"""`auto` augmenter options (ltkit.augment_auto): chosen on the validation split, recorded, remembered."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ltkit.augment_auto as augment_auto
import ltkit.finetune as finetune_module
from ltkit.augment import AUGMENTERS, AUTO, AUTO_FIXED, AugmentConfig, make_augmenter
from ltkit.augment.bank import load_bank
from ltkit.classifiers import Classifier, load_classifier
from ltkit.confusing import ConfusingConfig, build_table, load_table
from ltkit.errors import ConfigError
from ltkit.finetune import FinetuneConfig, accuracy_on, augment_finetune, finetune_classifier, split_features
from ltkit.metrics import balanced_gain
from ltkit.store import open_store
from storefixtures import make_store

FAST = dict(iterations=20, batch_size=32, device="cpu")


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    store = make_store(tmp_path_factory.mktemp("auto") / "features.h5")
    return build_table(store, ConfusingConfig(head_ratio=0.8))


@pytest.fixture(autouse=True)
def _fresh_memo():
    augment_auto._chosen.clear()
    yield
    augment_auto._chosen.clear()


def test_fsa_auto_follows_the_one_se_rule_and_is_recorded(table_path, tmp_path):
    out = augment_finetune(table_path, FinetuneConfig.from_options(FAST | {"seed": 3}), out=tmp_path / "fsa.pt")
    _, meta = load_classifier(out)
    options, tried = meta["options"], meta["options"]["auto_choice"]
    grid = AUGMENTERS.get("fsa").auto_grid
    assert len(tried) == len(grid) == 8 and tried[0]["augment"] == "none"  # the off point first
    assert all(options["request"][name] == AUTO for name in AUTO_FIXED)
    assert all(set(row) == set(grid[i]) | {"val_acc", "gain", "se", "margin"} for i, row in enumerate(tried) if i)
    beyond = [i for i in range(1, len(tried)) if tried[i]["gain"] > tried[i]["margin"]]
    chosen = max(beyond, key=lambda i: (tried[i]["val_acc"], -i)) if beyond else 0
    assert all(row["margin"] == pytest.approx(augment_auto.one_se_quantile(7) * row["se"]) for row in tried[1:])
    assert options["augment"] == tried[chosen].get("augment", "fsa")
    fsa_names = tuple(grid[1])  # the options FSA's grid sets (not h2t's ratio)
    assert {name: options[name] for name in fsa_names} == {name: tried[chosen][name] for name in fsa_names}
    # each row is what that point scores on validation when trained with the selection seed,
    # and its gain is the difference of the two rows' validation accuracies
    table = load_table(table_path)
    with open_store(table.lineage["parents"]["store"]["path"]) as st:
        bank = load_bank(st, table, device=torch.device("cpu"), spatial=True)
        phase1, val = Classifier.from_store(st), split_features(st, "val")
        base = FinetuneConfig.from_options(FAST).resolved(st.rows("train"), table.top)
        for row in (tried[0], tried[-1]):
            point = {name: row.get(name, AUTO_FIXED[name]) for name in AUTO_FIXED}  # h2t's ratio: fixed
            point |= {"augment": row.get("augment", "fsa")}
            clf, _ = finetune_classifier(bank, phase1, base.replace(seed=augment_auto.SELECTION_SEED, **point))
            assert accuracy_on(clf, *val) == row["val_acc"]
    assert tried[-1]["gain"] == pytest.approx(tried[-1]["val_acc"] - tried[0]["val_acc"], abs=1e-12)


def test_where_augmenting_does_not_help_auto_is_none_bit_for_bit(table_path, tmp_path):
    """The linear head (the paper's schedule) on the fixture store: no FSA point scores above
    the off point on validation, so auto keeps it: the classifier is `--augment none`'s,
    weight for weight."""
    common = FAST | {"seed": 2}
    auto = augment_finetune(table_path, FinetuneConfig.from_options(common | {"augment": "fsa"}),
                            out=tmp_path / "auto.pt")
    none = augment_finetune(table_path, FinetuneConfig.from_options(common | {"augment": "none"}),
                            out=tmp_path / "none.pt")
    (a, meta), (b, none_meta) = load_classifier(auto), load_classifier(none)
    assert all(row["gain"] <= row["margin"] for row in meta["options"]["auto_choice"][1:])
    assert meta["options"]["augment"] == "none" and meta["method"] == none_meta["method"] == "none"
    assert meta["options"]["request"]["augment"] == "fsa"
    assert {n: meta["options"][n] for n in AUTO_FIXED} == {n: none_meta["options"][n] for n in AUTO_FIXED}
    for name, value in a.to_state().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, b.to_state()[name]), name


def test_where_augmenting_clearly_helps_its_point_is_chosen(table_path, tmp_path):
    """cRT (a fresh head, Kang's schedule) in 20 steps on the fixture store: the balanced
    batches alone leave it far behind on validation, FSA's synthesised tail features lift it
    by several standard errors, and auto trains with the best FSA point."""
    cfg = FinetuneConfig.from_options(FAST | {"classifier": "crt", "augment": "fsa"})
    _, meta = load_classifier(augment_finetune(table_path, cfg, out=tmp_path / "crt.pt"))
    options, tried = meta["options"], meta["options"]["auto_choice"]
    top = max(range(len(tried)), key=lambda i: (tried[i]["val_acc"], -i))
    assert top > 0 and tried[top]["gain"] > 1.5 * tried[top]["margin"]  # clearly, not by a hair
    assert options["augment"] == "fsa" and meta["method"] == "fsa-crt"
    assert {n: options[n] for n in AUTO_FIXED if n in tried[top]} == {n: tried[top][n] for n in AUTO_FIXED
                                                                      if n in tried[top]}


def test_the_rule_margin_by_hand():
    """balanced_gain and pick on 6 images of 2 classes, computed by hand."""
    labels = np.array([0, 0, 0, 0, 1, 1])
    off = np.array([1, 0, 0, 1, 1, 0], bool)
    one_more = np.array([1, 1, 0, 1, 1, 0], bool)  # right on one more image of class 0
    # class 0: d = (0, 1, 0, 0), mean 1/4, sample variance 1/4; class 1: d = (0, 0), mean 0, variance 0
    # gain = (1/4 + 0) / 2 = 1/8; se = sqrt(1/4 / 4 + 0 / 2) / 2 = 1/8: not more than one se
    assert balanced_gain(off, one_more, labels) == (0.125, 0.125)
    two_more = np.array([1, 1, 0, 1, 1, 1], bool)  # and one more of class 1
    # class 1: d = (0, 1), mean 1/2, variance 1/2: gain = (1/4 + 1/2) / 2 = 3/8,
    # se = sqrt(1/16 + 1/4) / 2 = sqrt(5) / 8 = 0.2795
    gain, se = balanced_gain(off, two_more, labels)
    assert gain == pytest.approx(3 / 8) and se == pytest.approx(5 ** 0.5 / 8)

    def rows(*hits):  # the off point first, then augmenting points, with their balanced accuracy
        acc = [float(np.mean([h[labels == k].mean() for k in (0, 1)])) for h in hits]
        return [{"augment": "none", "val_acc": acc[0]}] + [{"tau_s": 0.5, "val_acc": a} for a in acc[1:]]

    # one augmenting point: its gain has to exceed one standard error
    assert augment_auto.one_se_quantile(1) == pytest.approx(1.0)
    assert augment_auto.pick(rows(off, one_more), [off, one_more], labels) == 0  # gain == se: off kept
    assert augment_auto.pick(rows(off, two_more), [off, two_more], labels) == 1  # 3/8 > sqrt(5)/8: chosen
    assert augment_auto.pick(rows(two_more, off), [two_more, off], labels) == 0  # best is off
    # two: P(Z > 1) = 0.1587 shared, P(Z > z) = 0.0793, z = 1.4096; 3/8 < 1.4096 sqrt(5)/8 = 0.394: off
    tried = rows(off, one_more, two_more)
    assert augment_auto.one_se_quantile(2) == pytest.approx(1.4096, abs=1e-4)
    assert augment_auto.pick(tried, [off, one_more, two_more], labels) == 0
    assert tried[2]["margin"] == pytest.approx(1.4096 * 5 ** 0.5 / 8, abs=1e-4)
    assert augment_auto.one_se_quantile(7) == pytest.approx(2.0, abs=0.01)  # FSA's 7 points
    all_right = np.ones(6, bool)  # gain 1/2 + 1/2 ... every image right: (3/4 + 1/2) / 2 = 5/8
    tried = rows(off, two_more, all_right)
    assert augment_auto.pick(tried, [off, two_more, all_right], labels) == 2
    # a class with a single image counts the largest variance a difference can have, 1
    assert balanced_gain(np.array([0], bool), np.array([1], bool), np.array([3])) == (1.0, 1.0)
    # a grid without an off point: the best, ties to the earlier point
    plain = [{"tau_s": 0.5, "val_acc": 0.5}, {"tau_s": 0.7, "val_acc": 0.6}, {"tau_s": 0.9, "val_acc": 0.6}]
    assert augment_auto.pick(plain, [off] * 3, labels) == 1 and "gain" not in plain[1]


def test_nothing_auto_trains_nothing_extra(table_path, tmp_path, monkeypatch):
    calls = []
    real = finetune_module.finetune_classifier
    monkeypatch.setattr(finetune_module, "finetune_classifier", lambda *a, **k: calls.append(1) or real(*a, **k))
    given = dict(FAST, **AUTO_FIXED)
    _, meta = load_classifier(augment_finetune(table_path, FinetuneConfig.from_options(given), out=tmp_path / "f.pt"))
    assert len(calls) == 1 and "auto_choice" not in meta["options"]


def test_an_augmenter_without_a_grid_takes_the_fixed_values(table_path, tmp_path):
    for augment in ("none", "class-balanced"):
        cfg = FinetuneConfig.from_options(FAST | {"augment": augment, "classifier": "crt"})
        _, meta = load_classifier(augment_finetune(table_path, cfg, out=tmp_path / f"{augment}.pt"))
        assert {name: meta["options"][name] for name in AUTO_FIXED} == AUTO_FIXED
        assert "auto_choice" not in meta["options"]


def test_the_choice_is_made_once_for_every_seed(table_path, tmp_path, monkeypatch):
    calls = []
    real = finetune_module.finetune_classifier
    monkeypatch.setattr(finetune_module, "finetune_classifier", lambda *a, **k: calls.append(1) or real(*a, **k))
    chosen = []
    for seed in (0, 1, 2):
        cfg = FinetuneConfig.from_options(FAST | {"seed": seed})
        _, meta = load_classifier(augment_finetune(table_path, cfg, out=tmp_path / f"s{seed}.pt"))
        chosen.append({name: meta["options"][name] for name in AUTO_FIXED})
    assert len(calls) == 8 + 3  # the grid once, then one run per seed
    assert chosen[0] == chosen[1] == chosen[2]


def test_without_a_validation_split_the_default_point_is_used_with_a_warning(tmp_path, capsys):
    store = make_store(tmp_path / "noval.h5", val_per_class=0)
    table = build_table(store, ConfusingConfig(head_ratio=0.8))
    _, meta = load_classifier(augment_finetune(table, FinetuneConfig.from_options(FAST), out=tmp_path / "f.pt"))
    assert {name: meta["options"][name] for name in AUTO_FIXED} == AUTO_FIXED
    assert "no validation split" in capsys.readouterr().err


def test_an_unchosen_auto_option_is_refused_by_the_augmenter(table_path):
    table = load_table(table_path)
    with open_store(table.lineage["parents"]["store"]["path"]) as st:
        bank = load_bank(st, table, device=torch.device("cpu"), spatial=True)
    with pytest.raises(ConfigError, match="tau_s still auto"):
        make_augmenter("fsa", bank, AugmentConfig(batch_size=32, tau_s=AUTO))
    with pytest.raises(ConfigError, match="--tau-s"):
        AugmentConfig(tau_s="often").validate()


def test_a_class_with_one_image_takes_the_pooled_variance_of_the_others():
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    a = np.array([1, 0, 0, 1, 1, 0, 1], bool)
    b = np.array([1, 1, 0, 1, 1, 1, 1], bool)  # class 2's one image: both right, d = 0
    # class 0: d = (0,1,0,0), var 1/4 (3 df); class 1: d = (0,1), var 1/2 (1 df): pooled (3/4 + 1/2) / 4 = 5/16
    gain, se = balanced_gain(a, b, labels)
    assert gain == pytest.approx((1 / 4 + 1 / 2 + 0) / 3)
    assert se == pytest.approx((1 / 16 + 1 / 4 + 5 / 16) ** 0.5 / 3)
    assert balanced_gain(a[[6]], b[[6]], labels[[6]]) == (0.0, 1.0)  # no class with two: variance 1


def test_without_a_validation_split_fsa_trains_its_first_point_not_the_off_one(tmp_path):
    store = make_store(tmp_path / "noval.h5", val_per_class=0)
    path = augment_finetune(store, FinetuneConfig.from_options({"device": "cpu", "iterations": 10}),
                            out=tmp_path / "fsa.pt")
    _, meta = load_classifier(path)
    assert meta["method"] == "fsa" and meta["options"]["augment"] == "fsa"
