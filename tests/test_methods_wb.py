"""``wb``: weight balancing's second stage: Cui et al.'s class-balanced loss, MaxNorm by
projection after every step, and weight decay / radius chosen on validation."""

from __future__ import annotations

import math

import pytest
import torch
from typer.testing import CliRunner

from ltkit.classifiers import load_classifier
from ltkit.cli import app
from ltkit.errors import ConfigError
from ltkit.finetune_config import FinetuneConfig
from ltkit.methods import get_method
from ltkit.methods.wb import max_norm_scale
from ltkit.store import open_store
from storefixtures import make_store

FAST = ["--iterations", "30", "--batch-size", "32", "--device", "cpu", "--quiet"]


def config(**options) -> FinetuneConfig:
    return FinetuneConfig(classifier="wb", method_options=options).resolved(100, 3)


def test_the_loss_is_the_class_balanced_cross_entropy():
    counts, beta = torch.tensor([80, 15, 5]), 0.9999
    logits = torch.tensor([[1.0, 0.0, -1.0], [0.3, 0.2, 0.1], [-0.5, 0.5, 2.0]])
    labels = torch.tensor([0, 1, 2])
    loss = get_method("wb").criterion(config(weight_decay=0.1, thresh=0.1), counts)(logits, labels)
    raw = [(1 - beta) / (1 - beta**n) for n in counts.tolist()]
    w = [3 * r / sum(raw) for r in raw]  # normalised to sum to K
    ce = [-(row[y] - math.log(sum(math.exp(z) for z in row))) for row, y in zip(logits.tolist(), labels.tolist())]
    assert float(loss) == pytest.approx(sum(w[y] * c for y, c in zip(labels.tolist(), ce)) / sum(w), rel=1e-5)


def test_max_norm_projects_only_the_rows_outside_the_ball():
    weight = torch.tensor([[3.0, 4.0], [0.6, 0.8], [0.0, 2.0]])  # norms 5, 1, 2
    projected = weight * max_norm_scale(weight, 2.0)
    assert torch.allclose(projected, torch.tensor([[1.2, 1.6], [0.6, 0.8], [0.0, 2.0]]))


def test_the_radius_lies_between_the_phase1_norms_and_holds_after_training(tmp_path):
    store = make_store(tmp_path / "s.h5")
    out = tmp_path / "wb.pt"
    done = CliRunner().invoke(app, ["augment-finetune", str(store), "--classifier", "wb", "--method-option",
                                    "weight_decay=0.001", "--method-option", "thresh=0.5", "--out", str(out), *FAST])
    assert done.exit_code == 0, done.stderr
    clf, meta = load_classifier(out)
    with open_store(store) as st:
        norms = torch.as_tensor(st.classifier()["weight"]).norm(dim=1)
    radius = float(norms.min() + 0.5 * (norms.max() - norms.min()))
    assert float(clf.weight.detach().norm(dim=1).max()) <= radius * (1 + 1e-5)
    assert meta["options"]["method_options"] == {"weight_decay": 0.001, "thresh": 0.5}
    assert meta["options"]["augment"] == "instance" and meta["options"]["lr"] == 0.01


def test_weight_decay_is_the_methods_own_and_reaches_sgd():
    assert get_method("wb").weight_decay(config(weight_decay=0.1, thresh=0.1)) == 0.1
    with pytest.raises(ConfigError, match="chooses its own weight decay"):
        FinetuneConfig(classifier="wb", weight_decay=0.1).validate()
    with pytest.raises(ConfigError, match="thresh=2"):
        FinetuneConfig(classifier="wb", method_options={"thresh": 2}).validate()


def test_auto_chooses_both_on_validation_over_the_grid(tmp_path):
    store = make_store(tmp_path / "s.h5")
    out = tmp_path / "wb.pt"
    done = CliRunner().invoke(app, ["augment-finetune", str(store), "--classifier", "wb", "--out", str(out), *FAST])
    assert done.exit_code == 0, done.stderr
    _, meta = load_classifier(out)
    grid = meta["options"]["auto_choice"]  # every point tried, with its validation accuracy
    assert [(r["weight_decay"], r["thresh"]) for r in grid] == [
        (wd, t) for wd in (0.1, 0.01, 0.001) for t in (0.1, 0.5, 1.0)]
    best = max(r["val_acc"] for r in grid)
    first = next(r for r in grid if r["val_acc"] == best)  # ties: the first point, the paper's first
    assert meta["options"]["method_options"] == {"weight_decay": first["weight_decay"], "thresh": first["thresh"]}


def test_a_store_without_validation_takes_the_papers_values_and_says_so(tmp_path):
    store = make_store(tmp_path / "s.h5", val_per_class=0)
    out = tmp_path / "wb.pt"
    done = CliRunner().invoke(app, ["augment-finetune", str(store), "--classifier", "wb", "--out", str(out),
                                    "--iterations", "30", "--batch-size", "32", "--device", "cpu"])
    assert done.exit_code == 0 and "no validation split to choose weight_decay, thresh" in done.stderr
    _, meta = load_classifier(out)
    assert meta["options"]["method_options"] == {"weight_decay": 0.1, "thresh": 0.1}  # the authors' demo
