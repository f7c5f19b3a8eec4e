"""`auto` augmenter options (ltkit.augment_auto): chosen on the validation split, recorded, remembered."""

from __future__ import annotations

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


def test_fsa_auto_is_the_validation_best_grid_point_and_is_recorded(table_path, tmp_path):
    out = augment_finetune(table_path, FinetuneConfig.from_options(FAST | {"seed": 3}), out=tmp_path / "fsa.pt")
    _, meta = load_classifier(out)
    options, tried = meta["options"], meta["options"]["auto_choice"]
    assert len(tried) == len(AUGMENTERS.get("fsa").auto_grid) == 7
    assert all(options["request"][name] == AUTO for name in AUTO_FIXED)
    best = max(range(len(tried)), key=lambda i: (tried[i]["val_acc"], -i))
    fsa_names = tuple(AUGMENTERS.get("fsa").auto_grid[0])  # the options FSA's grid sets (not h2t's ratio)
    assert {name: options[name] for name in fsa_names} == {name: tried[best][name] for name in fsa_names}
    # each row is what that point scores on validation when trained with the selection seed
    table = load_table(table_path)
    with open_store(table.lineage["parents"]["store"]["path"]) as st:
        bank = load_bank(st, table, device=torch.device("cpu"), spatial=True)
        phase1, val = Classifier.from_store(st), split_features(st, "val")
        base = FinetuneConfig.from_options(FAST).resolved(st.rows("train"), table.top)
        for row in (tried[0], tried[-1]):
            point = {name: row.get(name, AUTO_FIXED[name]) for name in AUTO_FIXED}  # h2t's ratio: fixed
            clf, _ = finetune_classifier(bank, phase1, base.replace(seed=augment_auto.SELECTION_SEED, **point))
            assert accuracy_on(clf, *val) == row["val_acc"]


def test_given_options_keep_their_value_and_shrink_the_grid(table_path, tmp_path):
    cfg = FinetuneConfig.from_options(FAST | {"tau_s": 0.7, "tau_g": 0.1, "tail_draw": "class", "head_draw": "class"})
    _, meta = load_classifier(augment_finetune(table_path, cfg, out=tmp_path / "fsa.pt"))
    tried = meta["options"]["auto_choice"]
    assert [row["gamma_min"] for row in tried] == [0.0, 0.5, 0.9]
    assert all(set(row) == {"gamma_min", "val_acc"} for row in tried)
    assert (meta["options"]["tau_s"], meta["options"]["tau_g"]) == (0.7, 0.1)


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
    assert len(calls) == 7 + 3  # the grid once, then one run per seed
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
