"""The SCL + RSG + LDAM system end to end on synthetic data: one command, an ordinary
backbone checkpoint, training-only parts in the resume state only, bad options refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import ltkit.train as train_module
from ltkit.checkpoint import load_backbone
from ltkit.cli import app
from ltkit.data import DatasetSpec
from ltkit.losses import LossOptions
from ltkit.models import create_model
from ltkit.runoptions import RunOptions
from ltkit.train import TrainConfig, train_backbone
from ltkit.train_state import result_options

TINY = ["--data", "synthetic", "--num-classes", "4", "--n-max", "40", "--imbalance", "4",
        "--val-per-class", "4", "--arch", "resnet32", "--batch-size", "16", "--device", "cpu"]
# the combination, RSG generating from the second epoch; small RSG widths keep it fast
SYSTEM = ["--loss", "ldam", "--drw-epoch", "1", "--scl-weight", "0.5", "--rsg", "--rsg-epoch", "1",
          "--rsg-head-ratio", "0.5", "--rsg-centers", "3", "--rsg-dim", "16"]


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


def test_scl_rsg_ldam_trains_in_one_command_into_a_plain_backbone(tmp_path):
    out = tmp_path / "system.pt"
    result = run_cli("train-backbone", *TINY, *SYSTEM, "--epochs", "2", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert "rsg: after stage 2" in result.stderr and "generated" in result.stderr
    ckpt = torch.load(out, weights_only=True)
    first, second = ckpt["history"]
    assert first["generated"] == 0 and second["generated"] > 0  # RSG from --rsg-epoch on
    for epoch in (first, second):
        assert {"cls_loss", "scl_loss", "cesc_loss", "mv_loss"} <= epoch.keys()
    assert second["mv_loss"] > 0 and first["mv_loss"] == 0
    cfg = result_options(ckpt["config"])  # the loss options are nested under loss_options
    assert cfg["rsg"] and cfg["scl_weight"] == 0.5 and cfg["loss"] == "ldam" and cfg["drw_epoch"] == 1
    # an ordinary backbone: the keys of a plain model of that arch, no training-only parts
    plain = create_model("resnet32", 4, 3, head="cosine").state_dict()
    assert ckpt["model_state"].keys() == plain.keys()
    assert "train_parts" not in ckpt and "optimizer" not in ckpt
    model, info = load_backbone(out)
    assert info["head"] == "cosine" and info["head_scale"] == 30.0
    with torch.no_grad():
        fmap = model.forward_features(torch.randn(2, 3, 16, 16))
    assert fmap.shape == (2, 64, 4, 4)  # what extract and CAMs read
    assert model.fc.weight.shape == (4, 64)


def _system_config(epochs: int = 2) -> TrainConfig:
    spec = DatasetSpec(name="synthetic", num_classes=4, n_max=40, imbalance=4, val_per_class=4)
    return TrainConfig(data=spec, arch="resnet32", batch_size=16, epochs=epochs, run=RunOptions(device="cpu"),
                       loss="ldam", loss_options=LossOptions(drw_epoch=1), scl_weight=0.5, rsg=True,
                       rsg_epoch=1, rsg_head_ratio=0.5, rsg_centers=3, rsg_dim=16, seed=2)


def test_interrupted_run_resumes_with_its_training_parts(tmp_path, monkeypatch):
    reference = train_backbone(_system_config(), out=tmp_path / "ref.pt")

    out = tmp_path / "b.pt"
    real_epoch = train_module.train_one_epoch

    def interrupted(*args, **kwargs):
        if args[6] == 1:  # the second epoch: after the first resume point was written
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_backbone(_system_config(), out=out)
    partial = torch.load(tmp_path / "b.pt.partial", weights_only=True)
    assert partial["epoch"] == 1
    parts = partial["train_parts"]
    assert set(parts) == {"projection", "rsg"} and "centers" in parts["rsg"]
    assert not any(k.startswith(("rsg", "projection")) for k in partial["model_state"])
    n_backbone = len(list(create_model("resnet32", 4, 3, head="cosine").parameters()))
    n_parts = 4 + 11  # projection: 2 layers; RSG: assignment (2), centres, T (2), contrastive (6)
    assert len(partial["optimizer"]["param_groups"][0]["params"]) == n_backbone + n_parts

    monkeypatch.setattr(train_module, "train_one_epoch", real_epoch)
    train_backbone(_system_config(), out=out)
    a = torch.load(reference, weights_only=True)["model_state"]
    b = torch.load(out, weights_only=True)["model_state"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("args, needle", [
    (["--scl-temperature", "0"], "--scl-temperature"),
    (["--scl-weight", "-1"], "--scl-weight"),
    (["--rsg", "--rsg-head-ratio", "1.5"], "--rsg-head-ratio"),
    (["--rsg", "--rsg-epoch", "5"], "--rsg-epoch"),
    (["--rsg", "--rsg-stage", "7"], "stages 1-3"),
    (["--rsg", "--rsg-centers", "0"], "--rsg-centers"),
])
def test_bad_scl_rsg_options_are_one_line_and_exit_2(tmp_path, args, needle):
    result = run_cli("train-backbone", *TINY, "--epochs", "2", "--out", str(tmp_path / "b.pt"), *args)
    assert result.exit_code == 2, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_rsg_starts_at_its_epoch_else_with_drw_else_at_80_percent():
    spec = DatasetSpec(name="synthetic")
    drw6 = LossOptions(drw_epoch=6)
    assert TrainConfig(data=spec, epochs=10, rsg=True, rsg_epoch=3, loss_options=drw6).rsg_start_epoch() == 3
    assert TrainConfig(data=spec, epochs=10, rsg=True, loss_options=drw6).rsg_start_epoch() == 6
    assert TrainConfig(data=spec, epochs=200, rsg=True).rsg_start_epoch() == 160  # the reference's


def test_a_checkpoint_from_before_these_options_is_still_reused(tmp_path):
    out = tmp_path / "b.pt"
    assert run_cli("train-backbone", *TINY, "--epochs", "1", "--out", str(out)).exit_code == 0
    ckpt = torch.load(out, weights_only=True)
    for key in [k for k in ckpt["config"] if k.startswith(("scl_", "rsg"))]:
        del ckpt["config"][key]  # as written by an ltkit without SCL and RSG
    torch.save(ckpt, out)
    again = run_cli("train-backbone", *TINY, "--epochs", "1", "--out", str(out))
    assert again.exit_code == 0 and "reusing" in again.stderr
    other = run_cli("train-backbone", *TINY, "--epochs", "1", "--scl-weight", "1", "--out", str(out))
    assert other.exit_code == 2 and "other options" in other.stderr


TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.mark.e2e
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed")
def test_the_system_trains_under_torchrun(tmp_path):
    """2 gloo processes: SCL gathers the global batch, RSG generates per process, and the
    processes' collective operations stay in step (no hang) with unused RSG parts."""
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "ltkit",
                          "train-backbone", *TINY, *SYSTEM, "--epochs", "2", "--out", str(out)],
                         env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["world_size"] == 2 and ckpt["history"][1]["generated"] > 0
    plain = create_model("resnet32", 4, 3, head="cosine").state_dict()
    assert ckpt["model_state"].keys() == plain.keys() and "train_parts" not in ckpt
