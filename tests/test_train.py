"""train-backbone: the checkpoint contract, the CLI contract, bad input, resume after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from fakedata import write_imagefolder, write_png
from ltkit.checkpoint import load_backbone
from ltkit.cli import app
from ltkit.data import DatasetSpec
from ltkit.train import TrainConfig, lr_at
from pausing import pause_env, wait_until_paused
from test_reliability import assert_refused, snapshot

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


@pytest.mark.e2e
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


# ---- checkpoints of the flat config layout (ltkit before the nested TrainConfig) -------------

def as_flat_layout(ckpt: dict) -> dict:
    """`ckpt` as the ltkit of the flat TrainConfig wrote it: loss options and how-it-ran
    options at the top of `config` (no drw_beta, no threads / resident_gib / scratch_dir) and
    no data fingerprint."""
    config = dict(ckpt["config"])
    loss_options, run_options = config.pop("loss_options"), config.pop("run")
    loss_options.pop("drw_beta")
    config.update(loss_options, device=run_options["device"], workers=run_options["workers"],
                  eval_every=run_options["eval_every"])
    flat = {k: v for k, v in ckpt.items() if k != "data_fingerprint"}
    return flat | {"config": config}


def test_a_flat_layout_checkpoint_is_reused_and_its_resume_state_resumes(tmp_path, monkeypatch):
    import ltkit.train as train_module

    args = [*TINY, "--epochs", "2", "--loss", "focal", "--focal-gamma", "2", "--seed", "1"]
    ref = tmp_path / "ref.pt"
    assert run_cli("train-backbone", *args, "--out", str(ref)).exit_code == 0
    # a finished checkpoint: reused by the same command, refused for another loss option
    torch.save(as_flat_layout(torch.load(ref, weights_only=True)), ref)
    before = ref.read_bytes()
    again = run_cli("train-backbone", *args, "--workers", "0", "--out", str(ref))
    assert again.exit_code == 0 and "reusing" in again.stderr and ref.read_bytes() == before
    other = run_cli("train-backbone", *args, "--focal-gamma", "1", "--out", str(ref))
    assert other.exit_code == 2 and "other options (focal_gamma)" in other.stderr
    # a resume state after epoch 1: resumed, and ends with the uninterrupted run's weights
    out = tmp_path / "b.pt"
    real_epoch = train_module.train_one_epoch

    def interrupted(*a, **kw):
        if a[6] == 1:
            raise KeyboardInterrupt
        return real_epoch(*a, **kw)

    monkeypatch.setattr(train_module, "train_one_epoch", interrupted)
    assert run_cli("train-backbone", *args, "--out", str(out)).exit_code == 130
    partial = tmp_path / "b.pt.partial"
    torch.save(as_flat_layout(torch.load(partial, weights_only=True)), partial)
    monkeypatch.setattr(train_module, "train_one_epoch", real_epoch)
    resumed = run_cli("train-backbone", *args, "--device", "cpu", "--out", str(out))
    assert resumed.exit_code == 0 and "resuming" in resumed.stderr, resumed.stderr
    a, b = (torch.load(p, weights_only=True)["model_state"] for p in (ref, out))
    assert all(torch.equal(a[key], b[key]) for key in a)


# ---- a rerun after the data changed (docs/reliability.md) ------------------------------------

FOLDER_ARGS = ["--data", "imagefolder", "--imbalance", "1", "--val-per-class", "0", "--image-size", "8",
               "--arch", "resnet32", "--epochs", "1", "--batch-size", "8", "--device", "cpu", "--quiet"]


def test_a_rerun_on_changed_data_is_refused_unless_forced(tmp_path):
    root = write_imagefolder(tmp_path / "data", [6, 4, 3], test_per_class=2, size=8)
    out = tmp_path / "b.pt"
    args = [*FOLDER_ARGS, "--root", str(root), "--out", str(out)]
    assert run_cli("train-backbone", *args).exit_code == 0
    before = snapshot(tmp_path)
    again = run_cli("train-backbone", *args)
    assert again.exit_code == 0 and again.stdout.strip() == str(out) and snapshot(tmp_path) == before
    write_png(root / "train" / "c1" / "extra.png", size=8, seed=9)  # the folder gained an image
    before = snapshot(tmp_path)
    assert_refused(run_cli("train-backbone", *args), "was trained on data that has changed since",
                   folder=tmp_path, before=before)
    (root / "train" / "c1" / "extra.png").unlink()
    os.utime(root / "train" / "c0" / "000.png", ns=(1, 1))  # an image replaced (a new date)
    before = snapshot(tmp_path)
    assert_refused(run_cli("train-backbone", *args), "data that has changed", folder=tmp_path, before=before)
    forced = run_cli("train-backbone", *args, "--force")
    assert forced.exit_code == 0 and forced.stdout.strip() == str(out)
    assert run_cli("train-backbone", *args).exit_code == 0  # reused: the checkpoint is of this data now


def test_a_resume_state_on_changed_data_is_refused_and_one_without_a_fingerprint_resumes(tmp_path):
    root = write_imagefolder(tmp_path / "data", [6, 4, 3], test_per_class=2, size=8)
    out = tmp_path / "b.pt"
    args = [*FOLDER_ARGS, "--root", str(root), "--out", str(out)]
    assert run_cli("train-backbone", *args).exit_code == 0
    ckpt = torch.load(out, weights_only=True)
    out.unlink()
    torch.save(ckpt | {"optimizer": {}, "data_fingerprint": "0" * 64}, tmp_path / "b.pt.partial")
    before = snapshot(tmp_path)
    assert_refused(run_cli("train-backbone", *args), "interrupted run on data that has changed since",
                   folder=tmp_path, before=before)
    # a checkpoint from before fingerprints: reused as before, without an error
    torch.save({k: v for k, v in ckpt.items() if k != "data_fingerprint"}, out)
    (tmp_path / "b.pt.partial").unlink()
    again = run_cli("train-backbone", *args)
    assert again.exit_code == 0 and again.stdout.strip() == str(out)


def test_eval_every_reports_the_validation_split_never_test(tmp_path):
    result = run_cli("train-backbone", *TINY, "--epochs", "2", "--eval-every", "1", "--out", str(tmp_path / "b.pt"))
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("val balanced acc") == 2
    assert "test balanced" not in result.stderr and "\ntest:" not in result.stderr  # test is evaluate's
    ckpt = torch.load(tmp_path / "b.pt", weights_only=True)
    assert sum(g["classes"] for g in ckpt["metrics"]["groups"].values()) == 4  # measured on val's 4 classes
    no_val = [v if prev != "--val-per-class" else "0" for prev, v in zip(["", *TINY], TINY)]
    none = run_cli("train-backbone", *no_val, "--epochs", "1", "--out", str(tmp_path / "c.pt"))
    assert none.exit_code == 0 and "no validation split" in none.stderr
