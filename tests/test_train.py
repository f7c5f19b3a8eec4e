"""train-backbone: the checkpoint contract, the CLI contract, bad input, resume after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ltkit.cli import app
from ltkit.checkpoint import load_backbone
from ltkit.data import DatasetSpec
from ltkit.train import TrainConfig, lr_at
from pausing import pause_env, wait_until_paused

TINY = ["--data", "synthetic", "--num-classes", "4", "--n-max", "40", "--imbalance", "4",
        "--val-per-class", "4", "--arch", "resnet32", "--batch-size", "32", "--device", "cpu"]


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


def test_train_writes_a_weights_only_checkpoint(tmp_path):
    out = tmp_path / "b.pt"
    result = run_cli("train-backbone", *TINY, "--epochs", "2", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(out)  # stdout carries only the path
    assert "epoch 2/2" in result.stderr
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["format"] == "ltkit-backbone" and ckpt["arch"] == "resnet32"
    assert ckpt["num_classes"] == 4 and len(ckpt["class_names"]) == 4
    assert ckpt["class_counts"][0] > ckpt["class_counts"][-1]
    assert ckpt["dataset"]["name"] == "synthetic" and ckpt["config"]["epochs"] == 2
    assert "optimizer" not in ckpt  # the final checkpoint is an inference artifact
    assert set(ckpt["metrics"]["groups"]) == {"many", "medium", "few"}
    model, info = load_backbone(out)
    assert info["head"] == "linear"
    assert not out.with_name("b.pt.partial").exists()


def test_rerun_with_same_options_reuses_the_checkpoint(tmp_path):
    out = tmp_path / "b.pt"
    assert run_cli("train-backbone", *TINY, "--epochs", "1", "--out", str(out)).exit_code == 0
    before = out.stat().st_mtime_ns
    again = run_cli("train-backbone", *TINY, "--epochs", "1", "--out", str(out))
    assert again.exit_code == 0 and again.stdout.strip() == str(out)
    assert "reusing" in again.stderr and out.stat().st_mtime_ns == before
    other = run_cli("train-backbone", *TINY, "--epochs", "1", "--lr", "0.05", "--out", str(out))
    assert other.exit_code == 2 and "--force" in other.stderr
    assert out.stat().st_mtime_ns == before


def test_existing_output_needs_force(tmp_path):
    out = tmp_path / "b.pt"
    out.write_bytes(b"precious")
    result = run_cli("train-backbone", *TINY, "--epochs", "1", "--out", str(out))
    assert result.exit_code == 2
    assert "--force" in result.stderr and "Traceback" not in result.stderr
    assert out.read_bytes() == b"precious"


@pytest.mark.parametrize("args, needle", [
    (["--arch", "resnet9000"], "resnet32"),           # lists the valid names
    (["--loss", "hinge"], "ldam"),
    (["--sampler", "magic"], "class-balanced"),
    (["--imbalance", "0.5"], "imbalance"),
    (["--data", "mnist-lt"], "fashion-mnist-lt"),
    (["--counts", "5,x"], "--counts"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    result = run_cli("train-backbone", *TINY, "--epochs", "1", "--out", str(tmp_path / "b.pt"), *args)
    assert result.exit_code == 2, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_missing_data_root_says_how_to_get_the_data(tmp_path):
    result = run_cli("train-backbone", "--data", "fashion-mnist-lt", "--root", str(tmp_path / "nope"),
                     "--epochs", "1", "--out", str(tmp_path / "b.pt"))
    assert result.exit_code == 2
    assert "dataset-fashion-mnist" in result.stderr or "--download" in result.stderr


def test_lr_schedule_warmup_cosine_and_step():
    spec = DatasetSpec(name="synthetic")
    cfg = TrainConfig(data=spec, lr=0.1, epochs=10, warmup_epochs=2)
    assert lr_at(cfg, 0.0) < lr_at(cfg, 1.0) < lr_at(cfg, 1.99) <= 0.1
    assert lr_at(cfg, 2.0) == pytest.approx(0.1)
    assert lr_at(cfg, 10.0) == pytest.approx(0.0, abs=1e-12)
    step = TrainConfig(data=spec, lr=0.1, epochs=10, warmup_epochs=0, schedule="step", milestones=[5, 8])
    assert [lr_at(step, e) for e in (4.9, 5.0, 8.0)] == pytest.approx([0.1, 0.01, 0.001])


def _ltkit(*args: str) -> list[str]:
    return [sys.executable, "-m", "ltkit", "train-backbone", *TINY, *args]


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    """SIGKILL after the first epoch's resume point; the rerun ends where an unbroken run does."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--epochs", "3", "--seed", "3"]
    ref = tmp_path / "ref.pt"
    subprocess.run(_ltkit(*common, "--out", str(ref)), check=True, env=env, capture_output=True)

    out = tmp_path / "killed.pt"
    partial, marker = tmp_path / "killed.pt.partial", tmp_path / "paused"
    proc = subprocess.Popen(_ltkit(*common, "--out", str(out)), env=pause_env(env, "epoch-end", 1, marker),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until_paused(proc, marker)  # the resume state after epoch 1 is on disk
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert partial.exists() and not out.exists()
    assert torch.load(partial, weights_only=True)["epoch"] == 1

    done = subprocess.run(_ltkit(*common, "--out", str(out)), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr
    a = torch.load(ref, weights_only=True)["model_state"]
    b = torch.load(out, weights_only=True)["model_state"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_partial_with_other_options_is_refused(tmp_path):
    out = tmp_path / "b.pt"
    first = run_cli("train-backbone", *TINY, "--epochs", "2", "--out", str(out))
    assert first.exit_code == 0
    # fake an interrupted run: the partial of a run with other options
    ckpt = torch.load(out, weights_only=True)
    ckpt["config"]["lr"] = 0.5
    torch.save(ckpt, tmp_path / "c.pt.partial")
    result = run_cli("train-backbone", *TINY, "--epochs", "2", "--out", str(tmp_path / "c.pt"))
    assert result.exit_code == 2 and "lr" in result.stderr and "--force" in result.stderr
