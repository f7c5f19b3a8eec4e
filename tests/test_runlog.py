"""The run log: OUT.metrics.csv of train-backbone and augment-finetune, its resume, TensorBoard."""

from __future__ import annotations

import csv

import pytest
import torch

import ltkit.runlog as runlog
from ltkit.classifiers import load_classifier
from ltkit.confusing import ConfusingConfig, build_table
from ltkit.finetune import FinetuneConfig, augment_finetune, val_accuracy
from ltkit.runlog import COLUMNS, RunLog, is_run_log, log_path, read_log
from ltkit.store import open_store
from ltkit.store.reader import Store
from storefixtures import make_store
from test_train import TINY, run_cli

HEADER = ["epoch", *COLUMNS]


def test_the_log_goes_beside_its_output_and_is_recognised(tmp_path):
    assert log_path(tmp_path / "backbone.pt") == tmp_path / "backbone.metrics.csv"
    assert log_path("runs/features.fsa.pt").name == "features.fsa.metrics.csv"
    with RunLog(tmp_path / "a.metrics.csv", "iteration", extra=("tail_acc",)) as log:
        log.write({"iteration": 50, "loss": 1.5, "val_balanced_acc": None, "tail_acc": 0.25})
        assert read_log(log.path) == [{"iteration": "50", **dict.fromkeys(COLUMNS, ""), "loss": "1.5",
                                       "tail_acc": "0.25"}]  # flushed before close
    assert is_run_log(tmp_path / "a.metrics.csv")
    (tmp_path / "notes.csv").write_text("epoch,score\n1,2\n")
    assert not is_run_log(tmp_path / "notes.csv") and not is_run_log(tmp_path / "missing.csv")


def test_train_logs_one_row_per_epoch_with_validation_where_evaluated(tmp_path):
    out = tmp_path / "b.pt"
    result = run_cli("train-backbone", *TINY, "--epochs", "3", "--eval-every", "2", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    with open(tmp_path / "b.metrics.csv", newline="") as fh:
        assert next(csv.reader(fh)) == HEADER
    rows = read_log(tmp_path / "b.metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["val_balanced_acc"] == "" and rows[1]["val_balanced_acc"] != "" != rows[2]["val_balanced_acc"]
    ckpt = torch.load(out, weights_only=True)
    final = ckpt["metrics"]
    assert float(rows[2]["val_balanced_acc"]) == pytest.approx(final["balanced_acc"])
    for group in ("many", "medium", "few"):  # an empty group is an empty cell, never 0
        accuracy = final["groups"][group]["accuracy"]
        assert rows[2][f"val_{group}_acc"] == ("" if accuracy is None else str(accuracy))
    for row, past in zip(rows, ckpt["history"]):
        assert float(row["loss"]) == pytest.approx(past["loss"]) and float(row["lr"]) > 0
        assert 0 <= float(row["train_acc"]) <= 1 and float(row["seconds"]) > 0


def test_a_resumed_run_continues_its_log_without_repeating_an_epoch(tmp_path, monkeypatch):
    import ltkit.train as train_module

    args = [*TINY, "--epochs", "4", "--seed", "2", "--out", str(tmp_path / "b.pt")]
    real_epoch = train_module.train_one_epoch

    def interrupted(*a, **kw):
        if a[6] == 2:  # the third epoch: two are logged and saved
            raise KeyboardInterrupt
        return real_epoch(*a, **kw)

    monkeypatch.setattr(train_module, "train_one_epoch", interrupted)
    assert run_cli("train-backbone", *args).exit_code == 130
    log = tmp_path / "b.metrics.csv"
    before = read_log(log)
    assert [r["epoch"] for r in before] == ["1", "2"]
    with open(log, "a") as fh:  # a row written by an epoch that ran past the last saved state
        fh.write("3,9.9,0.1,0.5,,,,,1.0\n")
    monkeypatch.setattr(train_module, "train_one_epoch", real_epoch)
    resumed = run_cli("train-backbone", *args)
    assert resumed.exit_code == 0 and "resuming" in resumed.stderr, resumed.stderr
    after = read_log(log)
    assert [r["epoch"] for r in after] == ["1", "2", "3", "4"] and after[:2] == before
    assert after[2]["loss"] != "9.9"


def test_the_log_replaces_only_an_earlier_log_never_a_user_file(tmp_path):
    out, log = tmp_path / "b.pt", tmp_path / "b.metrics.csv"
    log.write_text("my,own\nnotes,here\n")
    refused = run_cli("train-backbone", *TINY, "--epochs", "1", "--out", str(out), "--force")
    assert refused.exit_code == 2 and "not a run log" in refused.stderr
    assert log.read_text() == "my,own\nnotes,here\n" and not out.exists()
    log.unlink()
    assert run_cli("train-backbone", *TINY, "--epochs", "1", "--out", str(out)).exit_code == 0
    again = run_cli("train-backbone", *TINY, "--epochs", "2", "--out", str(out), "--force")
    assert again.exit_code == 0, again.stderr
    assert [r["epoch"] for r in read_log(log)] == ["1", "2"]  # the earlier log replaced, not appended to


def test_tensorboard_events_hold_the_logged_scalars(tmp_path):
    pytest.importorskip("tensorboard")  # in the test extra; the CSV log is tested without it
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = tmp_path / "tb"
    result = run_cli("train-backbone", *TINY, "--epochs", "2", "--out", str(tmp_path / "b.pt"),
                     "--tensorboard", str(events))
    assert result.exit_code == 0, result.stderr
    acc = EventAccumulator(str(events))
    acc.Reload()
    rows = read_log(tmp_path / "b.metrics.csv")
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2]
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx([float(r["loss"]) for r in rows])
    assert [e.step for e in acc.Scalars("val/balanced_acc")] == [2]  # evaluated at the end only


def test_tensorboard_without_the_package_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(runlog.importlib.util, "find_spec", lambda name, *a: None)
    result = run_cli("train-backbone", *TINY, "--epochs", "1", "--out", str(tmp_path / "b.pt"),
                     "--tensorboard", str(tmp_path / "tb"))
    assert result.exit_code == 2 and "ltkit[tensorboard]" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "b.pt").exists()
    (tmp_path / "file").write_text("x")
    assert "is a file" in run_cli("augment-finetune", str(tmp_path / "x.h5"), "--tensorboard",
                                  str(tmp_path / "file")).stderr


def test_finetune_logs_validation_only_never_the_test_split(tmp_path, monkeypatch):
    table = build_table(make_store(tmp_path / "features.h5"), ConfusingConfig(head_ratio=0.8))
    read = []
    real_read = Store.read
    monkeypatch.setattr(Store, "read", lambda self, split, name, *a, **kw: (read.append(split),
                                                                            real_read(self, split, name, *a, **kw))[1])
    out = augment_finetune(table, FinetuneConfig.from_options(dict(iterations=120, batch_size=32, device="cpu",
                                                                   eval_every=40)))
    assert "test" not in read and "val" in read  # the test split is evaluate's alone
    rows = read_log(out.with_name("features.fsa.metrics.csv"))
    assert [r["iteration"] for r in rows] == ["40", "50", "80", "100", "120"]
    assert [r["val_balanced_acc"] != "" for r in rows] == [True, False, True, False, True]
    clf, meta = load_classifier(out)
    with open_store(tmp_path / "features.h5") as st:
        assert float(rows[-1]["val_balanced_acc"]) == pytest.approx(val_accuracy(st, clf))
    assert rows[0]["val_many_acc"] != "" and float(rows[0]["train_acc"]) >= 0
    assert [float(r["loss"]) for r in rows] == pytest.approx([h["loss"] for h in meta["history"]])
