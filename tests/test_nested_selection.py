"""Nested selection: methods choose their options on validation images the sweep never compares
them on (val's tune / select halves, or the bound split); the chosen method's test rank."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ltkit.classifiers import Classifier, load_classifier
from ltkit.cli import app
from ltkit.errors import ConfigError
from ltkit.finetune import accuracy_on
from ltkit.finetune_config import FinetuneConfig
from ltkit.methods import CLASSIFIERS, TrainingFreeMethod
from ltkit.store import open_store
from ltkit.sweep import SweepConfig, sweep
from ltkit.sweep_results import MethodRow, choose, rank_on_test
from ltkit.valparts import part_rows, val_features
from storefixtures import make_store

FAST = SweepConfig(seeds=1, iterations=20, device="cpu")


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_the_tune_and_select_halves_are_disjoint_stratified_and_cover_val():
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(5), [4, 5, 1, 2, 7]))  # odd and even counts, shuffled
    tune, select = part_rows(labels, "tune"), part_rows(labels, "select")
    assert not set(tune) & set(select) and sorted([*tune, *select]) == list(range(len(labels)))
    assert np.bincount(labels[tune], minlength=5).tolist() == [2, 3, 1, 1, 4]    # ceil(n / 2) per class
    assert np.bincount(labels[select], minlength=5).tolist() == [2, 2, 0, 1, 3]  # floor(n / 2)
    for k in range(5):  # within a class, store order alternates: 1st, 3rd, ... tune
        rows = np.flatnonzero(labels == k)
        assert tune[np.isin(tune, rows)].tolist() == rows[0::2].tolist()
    assert np.array_equal(part_rows(labels, "tune"), tune)  # deterministic
    assert part_rows(labels, "all").tolist() == list(range(len(labels)))


def test_evaluate_measures_a_validation_half_and_the_bound_split(tmp_path):
    store = make_store(tmp_path / "features.h5", val_per_class=3, bound_per_class=4)
    counts = {}
    for split, part in (("val", "all"), ("val", "tune"), ("val", "select"), ("bound", "all")):
        result = run("evaluate", str(store), "--split", split, "--val-part", part, "--device", "cpu")
        assert result.exit_code == 0, result.stderr
        out = json.loads(result.stdout)
        assert out["on"] == split and out.get("val_part", "all") == part
        counts[split, part] = [c["test_count"] for c in out["per_class"]]
    assert counts["val", "tune"] == [2] * 6 and counts["val", "select"] == [1] * 6 and counts["bound", "all"] == [4] * 6
    refused = run("evaluate", str(store), "--val-part", "select", "--device", "cpu")
    assert refused.exit_code == 2 and "add --split val" in refused.stderr


def test_a_run_chooses_its_options_on_the_half_it_is_given(tmp_path):
    store = make_store(tmp_path / "features.h5", val_per_class=5)
    for part in ("all", "tune"):
        out = tmp_path / f"la.{part}.pt"
        result = run("augment-finetune", str(store), "--classifier", "logit-adjust", "--val-part", part,
                     "--device", "cpu", "--out", str(out))
        assert result.exit_code == 0, result.stderr
        clf, meta = load_classifier(out)
        assert meta["options"].get("val_part", "all") == part  # recorded only when not all (runs of before)
        with open_store(store) as st:  # the curve it chose tau on is the one measured on that half
            x, y = val_features(st, "cpu", part=part)
        assert len(y) == (30 if part == "all" else 18)
        from ltkit.methods.logit_adjust import adjusted

        prior = torch.tensor(np.log(np.asarray(st.train_counts) / sum(st.train_counts)), dtype=torch.float32)
        phase1 = Classifier.from_store(open_store(store))
        for row in meta["history"][:5]:
            assert row["val_acc"] == pytest.approx(accuracy_on(adjusted(phase1, prior, row["tau"]), x, y))
    assert FinetuneConfig(val_part="all").to_options() == FinetuneConfig().to_options()
    with pytest.raises(ConfigError, match="--val-part"):
        FinetuneConfig(val_part="test").validate()


TAILORED: list[Classifier] = []  # the overfitting grid point of `Peek`, made by the test from its store
SEEN: list[np.ndarray] = []      # the validation labels each `Peek` run was given


class Peek(TrainingFreeMethod):
    """A method whose grid (a head tailored to the tune half, or Phase I) overfits what it is given."""

    name = "peek"

    def make(self, inputs):
        x, y = inputs.val
        SEEN.append(y.cpu().numpy())
        grid = [TAILORED[0], inputs.phase1]
        scores = [accuracy_on(c, x, y) for c in grid]
        best = max(range(len(grid)), key=lambda i: (scores[i], -i))
        return grid[best], [{"point": i, "val_acc": s} for i, s in enumerate(scores)], inputs.cfg


def _tailored(store: Path) -> Classifier:
    """A linear head right on every image of val's tune half and wrong on every one of its select
    half (32 features interpolate the 18 validation images exactly)."""
    with open_store(store) as st:
        x, y = val_features(st)
    k = int(y.max()) + 1
    target = torch.nn.functional.one_hot(y, k).double()
    select = torch.from_numpy(part_rows(y.numpy(), "select"))
    target[select] = torch.nn.functional.one_hot((y[select] + 1) % k, k).double()
    design = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)  # (18, 33)
    solution = torch.linalg.lstsq(design, target).solution  # (33, K)
    return Classifier("linear", solution[:-1].T.float(), solution[-1].float())


def test_a_method_whose_grid_overfits_the_tune_half_is_not_favoured_on_the_select_half(tmp_path, monkeypatch):
    store = make_store(tmp_path / "features.h5", channels=32, val_per_class=3)
    TAILORED[:] = [_tailored(store)]
    with open_store(store) as st:
        for part, want in (("tune", 1.0), ("select", 0.0)):
            assert accuracy_on(TAILORED[0], *val_features(st, part=part)) == want
    monkeypatch.setitem(CLASSIFIERS._items, "peek", Peek)
    SEEN.clear()
    chosen = sweep(store, FAST, out=tmp_path / "sweep")
    summary = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    rows = {m["method"]: m for m in summary["methods"]}
    peek = rows["peek"]
    # it was given the tune half only, chose the tailored head there (100 % on what it saw) ...
    assert [len(s) for s in SEEN] == [12] and load_classifier(peek["classifiers"][0])[1]["history"][0]["val_acc"] == 1
    # ... which the sweep measured on the select half, where it is wrong on every image: not chosen
    assert peek["summary"]["select_balanced"]["mean"] == 0 and summary["chosen"]["method"] != "peek"
    # measured on the half it chose on (what a non-nested sweep does), no method scores above it
    on_tune = {m: json.loads(run("evaluate", r["classifiers"][0], "--split", "val", "--val-part", "tune",
                                 "--device", "cpu").stdout)["balanced_accuracy"] for m, r in rows.items()}
    assert on_tune["peek"] == 1.0 == max(on_tune.values()) and Path(chosen).is_file()


def test_select_on_bound_compares_on_bound_while_methods_tune_on_all_of_val(tmp_path):
    store = make_store(tmp_path / "features.h5", bound_per_class=4)
    chosen = sweep(store, SweepConfig(seeds=1, iterations=20, device="cpu"), out=tmp_path / "auto")
    summary = json.loads((tmp_path / "auto" / "sweep.json").read_text())
    assert summary["selection"]["select_on"] == "bound" and summary["selection"]["images"] == 24
    assert chosen.name.endswith(".seed0.pt") and ".tune." not in chosen.name
    meta = load_classifier(tmp_path / "auto" / "runs" / "tau-norm.seed0.pt")[1]
    assert "val_part" not in meta["options"]  # all of val: an ordinary run
    assert (tmp_path / "auto" / "runs" / "tau-norm.seed0.bound.json").is_file()
    bare = make_store(tmp_path / "bare" / "features.h5")
    with pytest.raises(ConfigError, match="no bound split"):
        sweep(bare, SweepConfig(seeds=1, iterations=20, device="cpu", select_on="bound"), out=tmp_path / "no")


def _row(method: str, select: float, test: float, eligible: bool = True) -> MethodRow:
    def result(acc: float) -> dict:
        group = {"accuracy": acc}
        return {"balanced_accuracy": acc, "top1": acc, "splits": {"many": group, "medium": group, "few": group}}

    return MethodRow(method, {}, [f"{method}.pt"], [result(select)], [result(test)], eligible=eligible)


def test_the_chosen_methods_test_rank_counts_the_candidates_only_and_never_chooses():
    rows = [_row("phase1", 0.99, 0.99, eligible=False), _row("a", 0.80, 0.90), _row("b", 0.85, 0.70),
            _row("c", 0.70, 0.95), _row("d", 0.60, 0.70)]
    chosen = choose(rows)
    assert chosen.method == "b" and rank_on_test(rows, chosen) == (3, 4)  # a and c better on test; d ties
    assert rank_on_test(rows, rows[3]) == (1, 4)
