"""torchrun + gloo on CPU: 2 processes train what 1 process trains on the same global batch."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TORCHRUN = Path(sys.executable).with_name("torchrun")
pytestmark = pytest.mark.e2e  # torchrun and ltkit processes
# 60 training images: an even split over 2 ranks, so the global batches are the same
ARGS = ["train-backbone", "--data", "synthetic", "--num-classes", "4", "--n-max", "24",
        "--counts", "24,16,12,8", "--val-per-class", "0", "--arch", "resnet32", "--batch-size", "16",
        "--epochs", "2", "--warmup-epochs", "0", "--no-augment", "--device", "cpu", "--seed", "5",
        # a gentle rate: this tiny problem amplifies float rounding ~100x per step at lr 0.05
        "--lr", "0.005"]


@pytest.mark.skipif(not TORCHRUN.exists() and shutil.which("torchrun") is None,
                    reason="torchrun not installed")
def test_two_gloo_processes_match_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = tmp_path / "one.pt"
    two = tmp_path / "two.pt"
    subprocess.run([sys.executable, "-m", "ltkit", *ARGS, "--out", str(one)], check=True,
                   env=env, capture_output=True)
    run = subprocess.run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "ltkit",
                          *ARGS, "--out", str(two)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == str(two)  # rank 0 alone prints the path
    a = torch.load(one, weights_only=True)
    b = torch.load(two, weights_only=True)
    assert b["world_size"] == 2 and a["world_size"] == 1
    from ltkit.device import seed_everything
    from ltkit.models import create_model

    seed_everything(5)
    init = create_model("resnet32", 4, 3).state_dict()
    moved = max((a["model_state"][k] - init[k]).abs().max().item() for k in init
                if init[k].is_floating_point())
    assert moved > 1e-2  # training really happened, so matching is not trivial
    for key, value in a["model_state"].items():
        other = b["model_state"][key]
        if value.is_floating_point():
            torch.testing.assert_close(other, value, rtol=1e-3, atol=1e-4, msg=key)
        else:
            assert torch.equal(other, value), key


def test_a_failing_worker_ends_the_run_with_an_error(tmp_path):
    """A rank that cannot start (bad option everywhere) exits non-zero, not a hang."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "ltkit",
                          *ARGS, "--batch-size", "15", "--out", str(tmp_path / "x.pt")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "must divide evenly" in run.stderr


def test_two_process_extract_equals_one_process(tmp_path):
    """Each rank extracts a shard; rank 0 joins them into the single-process store, exactly."""
    import h5py
    import numpy as np

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ckpt = tmp_path / "b.pt"
    subprocess.run([sys.executable, "-m", "ltkit", "train-backbone", "--data", "synthetic",
                    "--num-classes", "4", "--counts", "30,20,10,7", "--val-per-class", "3",
                    "--epochs", "1", "--device", "cpu", "--out", str(ckpt)],
                   check=True, env=env, capture_output=True)
    extract = ["extract", str(ckpt), "--batch-size", "8", "--train-views", "2", "--device", "cpu"]
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    subprocess.run([sys.executable, "-m", "ltkit", *extract, "--out", str(one)], check=True,
                   env=env, capture_output=True)
    run = subprocess.run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "ltkit",
                          *extract, "--out", str(two)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == str(two)  # one line: rank 0 alone prints
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.metrics.csv", "b.pt", "one.h5", "two.h5"]  # shards gone

    def datasets(f, prefix=""):
        for key, item in f.items():
            if isinstance(item, h5py.Group):
                yield from datasets(item, f"{prefix}{key}/")
            else:
                yield f"{prefix}{key}"

    with h5py.File(one, "r") as a, h5py.File(two, "r") as b:
        names = sorted(datasets(a))
        assert names == sorted(datasets(b)) and "train/views/features" in names
        for name in names:
            assert np.array_equal(a[name][()], b[name][()]), name
        assert "shard" not in b.attrs and b.attrs["complete"] == 1
    from ltkit.store import open_store

    with open_store(one) as a, open_store(two) as b:  # the joined store validates, counts included
        assert a.attrs["train_counts"] == b.attrs["train_counts"] == [30, 20, 10, 7]


def _processes_naming(text: str) -> list[int]:
    """Pids of the processes whose command line contains ``text`` (Linux /proc)."""
    pids = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(proc.name))
    return pids


@pytest.mark.skipif(not TORCHRUN.exists() and shutil.which("torchrun") is None,
                    reason="torchrun not installed")
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
def test_killed_torchrun_resumes_to_the_weights_of_an_unbroken_run(tmp_path):
    """SIGKILL to every process of a 2-rank run once its first epoch is saved; the same
    torchrun command then resumes and ends where an unbroken 2-rank run ends."""
    import signal
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "ltkit", *ARGS]
    ref = tmp_path / "ref.pt"
    subprocess.run([*launch, "--out", str(ref)], check=True, env=env, capture_output=True, timeout=300)

    out, partial = tmp_path / "killed.pt", tmp_path / "killed.pt.partial"
    proc = subprocess.Popen([*launch, "--out", str(out)], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not partial.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    for pid in _processes_naming(str(out)):  # torchrun and both ranks (each in its own group)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1)
    assert partial.exists() and not out.exists(), "the kill should land between the two epochs"

    done = subprocess.run([*launch, "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming" in done.stderr
    a = torch.load(ref, weights_only=True)["model_state"]
    b = torch.load(out, weights_only=True)["model_state"]
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.skipif(not TORCHRUN.exists() and shutil.which("torchrun") is None,
                    reason="torchrun not installed")
def test_two_gloo_processes_train_the_phase1_recipes_repeatably(tmp_path):
    """Mixup + CutMix on each rank's share of the batch, RandAugment in a DataLoader worker per
    rank, MaxNorm after each step: the run finishes, records them, and repeats exactly."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    recipe = ["--mixup", "0.2", "--cutmix", "1.0", "--augment", "--augment-policy", "randaugment",
              "--workers", "1", "--max-norm", "0.5", "--lr", "0.05"]
    outs = [tmp_path / "a.pt", tmp_path / "b.pt"]
    for out in outs:
        run = subprocess.run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "ltkit",
                              *ARGS, *recipe, "--out", str(out)], env=env, capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
    a, b = (torch.load(out, weights_only=True) for out in outs)
    assert a["world_size"] == 2 and a["config"]["mixup"] == 0.2 and a["config"]["augment_policy"] == "randaugment"
    assert a["model_state"]["fc.weight"].norm(dim=1).max() <= 0.5 + 1e-5
    for key, value in a["model_state"].items():
        assert torch.equal(b["model_state"][key], value), key
