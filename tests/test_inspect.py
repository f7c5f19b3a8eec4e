"""ltkit inspect on every artifact kind: the kind from the file itself, the human summary on
stderr, --json parseable on stdout, one line for anything else."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from ltkit.cli import app
from ltkit.confusing import ConfusingConfig, build_table
from ltkit.finetune import FinetuneConfig, augment_finetune
from storefixtures import make_store
from test_train import TINY, run_cli


def inspect(path, *more: str) -> tuple[dict, str]:
    """`ltkit inspect PATH --json`: (the parsed JSON, stderr)."""
    result = run_cli("inspect", str(path), "--json", *more)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), result.stderr


@pytest.fixture(scope="module")
def phase2(tmp_path_factory):
    """A store, its table, a fine-tuned classifier, its evaluation JSON and report folder."""
    folder = tmp_path_factory.mktemp("inspect")
    store = make_store(folder / "features.h5")
    table = build_table(store, ConfusingConfig(head_ratio=0.8))
    fsa = dict(tau_s=0.5, tau_g=0.3, gamma_min=0.0, tail_draw="class", head_draw="class")  # FSA itself, not auto
    clf = augment_finetune(table, FinetuneConfig.from_options(dict(iterations=60, batch_size=32, device="cpu",
                                                                   eval_every=30, **fsa)))
    evaluated = run_cli("evaluate", str(clf), "--report", str(folder / "report"))
    assert evaluated.exit_code == 0, evaluated.stderr
    (folder / "eval.json").write_text(evaluated.stdout)
    return {"store": store, "table": table, "classifier": clf, "json": folder / "eval.json",
            "report": folder / "report", "log": folder / "features.fsa.metrics.csv"}


def test_a_checkpoint_and_its_resume_state(tmp_path, monkeypatch):
    import ltkit.train as train_module

    real_epoch = train_module.train_one_epoch

    def interrupted(*a, **kw):
        if a[6] == 1:  # the second epoch: the first is saved
            raise KeyboardInterrupt
        return real_epoch(*a, **kw)

    monkeypatch.setattr(train_module, "train_one_epoch", interrupted)
    out = tmp_path / "b.pt"
    assert run_cli("train-backbone", *TINY, "--epochs", "2", "--out", str(out)).exit_code == 130
    partial, stderr = inspect(tmp_path / "b.pt.partial")
    assert partial["kind"] == "resume-state" and partial["epoch"] == 1 and len(partial["history"]) == 1
    assert "unfinished run" in stderr
    monkeypatch.setattr(train_module, "train_one_epoch", real_epoch)
    assert run_cli("train-backbone", *TINY, "--epochs", "2", "--eval-every", "1", "--out", str(out)).exit_code == 0
    info, stderr = inspect(out)
    ckpt = torch.load(out, weights_only=True)
    assert info["kind"] == "backbone-checkpoint" and info["arch"] == "resnet32" and info["epoch"] == 2
    assert [c["train_count"] for c in info["classes"]] == ckpt["class_counts"]
    assert sum(info["groups"].values()) == 4 and info["config"]["epochs"] == 2
    assert [row["epoch"] for row in info["history"]] == [1, 2]
    assert info["metrics"]["balanced_acc"] == pytest.approx(ckpt["metrics"]["balanced_acc"])
    assert info["parameters"] == sum(t.numel() for t in ckpt["model_state"].values())
    assert "backbone checkpoint" in stderr and "val bal" in stderr and "resnet32" in stderr


def test_a_table(phase2):
    info, stderr = inspect(phase2["table"])
    assert info["kind"] == "confusing-table" and info["head_ratio"] == 0.8
    assert info["head"] + info["tail"] == len(info["classes"]) == 6
    assert [c["role"] for c in info["classes"]].count("tail") == info["tail"] == len(info["confusing"])
    assert all(len(row["confusing"]) == info["top"] for row in info["confusing"])
    assert "confusing-class table" in stderr and "class5" in stderr


def test_a_classifier_with_its_history_and_its_store_counts(phase2):
    info, stderr = inspect(phase2["classifier"])
    assert info["kind"] == "classifier" and info["method"] == "fsa"
    assert info["classifier"]["shape"] == [6, 8] and info["options"]["iterations"] == 60
    assert [row["iteration"] for row in info["history"]] == [30, 50, 60]
    assert [c["train_count"] for c in info["classes"]] == [120, 60, 25, 12, 5, 2]
    assert set(info["lineage"]["parents"]) == {"store", "table"}
    assert "classifier (fsa)" in stderr and "history" in stderr and "on pooled features" in stderr
    assert info["head"] == {"kind": "linear"}


def test_an_evaluation_a_report_and_a_run_log(phase2):
    evaluation, stderr = inspect(phase2["json"])
    assert evaluation["kind"] == "evaluation" and evaluation["evaluation"]["format"] == "ltkit-evaluation"
    assert "ltkit evaluation" in stderr
    report, _ = inspect(phase2["report"])
    assert report["kind"] == "report" and "metrics.json" in report["files"]
    assert report["evaluation"] == evaluation["evaluation"]
    log, stderr = inspect(phase2["log"])
    assert log["kind"] == "run-log" and log["step"] == "iteration"
    assert [row["iteration"] for row in log["rows"]] == [30, 50, 60] and log["rows"][1]["val_balanced_acc"] is None
    assert "run log, 3 row(s)" in stderr


def test_the_store_json_is_as_before_with_its_kind(phase2):
    info, _ = inspect(phase2["store"], "--quiet")
    assert info["kind"] == "store" and info["groups"] == {"many": 1, "medium": 2, "few": 3}


def test_anything_else_is_one_line(phase2, tmp_path):
    cases = {"notes.txt": "hello", "other.json": '{"format": "something"}', "plain.csv": "a,b\n1,2\n"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    torch.save({"format": "ltkit-future-thing"}, tmp_path / "future.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    (tmp_path / "folder").mkdir()
    for name in [*cases, "future.pt", "plain.pt", "folder"]:
        result = run_cli("inspect", str(tmp_path / name))
        assert result.exit_code == 2 and "not an ltkit" in result.stderr, (name, result.stderr)
        assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert "ltkit-future-thing" in run_cli("inspect", str(tmp_path / "future.pt")).stderr
    broken = tmp_path / "broken.json"  # an evaluation, damaged: said as such
    broken.write_text(json.dumps({"format": "ltkit-evaluation", "format_version": 7}))
    assert "format version 7" in run_cli("inspect", str(broken)).stderr


def test_inspect_reads_the_path_from_stdin(phase2, tmp_path):
    moved = tmp_path / "t.pt"
    shutil.copy(phase2["table"], moved)
    result = CliRunner().invoke(app, ["inspect", "-", "--json", "--quiet"], input=f"{moved}\n")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["kind"] == "confusing-table"
