"""Every example runs, on small fake-format or synthetic data, so none of them can rot: the
shell pipelines of examples/ and the library-API script, each with its outputs checked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fakedata import write_cifar10, write_imagefolder, write_list_files

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FAST = {"FINETUNE": "--iterations 60 --device cpu", "OMP_NUM_THREADS": "1"}


def run_example(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "LTKIT": str(BIN / "ltkit"), "RUNS": str(tmp_path / "runs"),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **FAST, **env}
    done = subprocess.run(["bash", str(ROOT / "examples" / script)], env=full, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def balanced(path: Path) -> float:
    result = json.loads(path.read_text())
    assert result["samples"] > 0 and 0.0 <= result["balanced_accuracy"] <= 1.0
    return result["balanced_accuracy"]


@pytest.mark.e2e
def test_demo_pipeline_runs_and_compares_every_method(tmp_path):
    data = ("--data synthetic --num-classes 8 --n-max 40 --imbalance 20 --val-per-class 4 "
            "--batch-size 16 --lr 0.02 --device cpu")
    done = run_example("fashion_mnist_lt.sh", tmp_path, DATA=data, EPOCHS="1")
    runs = tmp_path / "runs"
    for name in ("phase1", "fsa", "none", "crt", "lws", "tau-norm", "ncm", "cloud"):
        balanced(runs / f"{name}.json")
        assert json.loads((runs / f"{name}.json").read_text())["fsa"]["tail"]["accuracy"] is not None
    assert "fsa" in done.stdout and "cloud" in done.stdout  # the compare table
    again = run_example("fashion_mnist_lt.sh", tmp_path, DATA=data, EPOCHS="1")
    assert "reus" in again.stderr  # every stage finds its artifact and says so


@pytest.mark.e2e
def test_cifar_lt_example_on_fake_cifar10(tmp_path):
    write_cifar10(tmp_path / "cifar", per_class=30, test_per_class=4)
    run_example("cifar_lt.sh", tmp_path, ROOT=str(tmp_path / "cifar"), IMBALANCE="5", EPOCHS="1",
                EXTRA="--batch-size 16 --lr 0.02 --val-per-class 2 --device cpu")
    for name in ("phase1", "fsa", "crt"):
        balanced(tmp_path / "runs" / f"{name}.json")


@pytest.mark.e2e
def test_imagefolder_example_on_fake_folders(tmp_path):
    write_imagefolder(tmp_path / "folders", counts=[30, 20, 10, 4, 2], test_per_class=3)
    run_example("imagefolder.sh", tmp_path, ROOT=str(tmp_path / "folders"),  # the defaults for one's own data
                ARCH="resnet32", EPOCHS="1", EXTRA="--batch-size 8 --lr 0.02 --device cpu")
    runs = tmp_path / "runs"
    balanced(runs / "fsa.json"), balanced(runs / "phase1.json")
    assert (runs / "confusing.csv").is_file() and any((runs / "report").glob("*.png"))


@pytest.mark.e2e
@pytest.mark.skipif(not (BIN / "torchrun").exists() and shutil.which("torchrun") is None,
                    reason="torchrun not installed")
def test_imagenet_lt_example_with_torchrun_on_fake_list_files(tmp_path):
    lists = write_list_files(tmp_path / "inlt", counts=[24, 16, 8, 3, 2], test_per_class=3, val_per_class=2)
    for split, path in lists.items():  # the data sets' own names: <PREFIX>_<split>.txt
        path.rename(path.with_name(f"Fake_LT_{split}.txt"))
    run_example("imagenet_lt_torchrun.sh", tmp_path, ROOT=str(tmp_path / "inlt"),
                LISTS=str(tmp_path / "inlt"), PREFIX="Fake_LT", NPROC="1",
                TORCHRUN=str(BIN / "torchrun") if (BIN / "torchrun").exists() else "torchrun",
                ARCH="resnet32", EPOCHS="1", BATCH="8", LR="0.02", WORKERS="0",
                RESIDENT_GIB="0", EXTRA="--image-size 12 --device cpu")
    runs = tmp_path / "runs"
    balanced(runs / "fsa.json"), balanced(runs / "phase1.json")


def test_library_api_example(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import library_api

    results = library_api.main(["--data", "synthetic", "--imbalance", "10", "--epochs", "1", "--lr", "0.02",
                                "--iterations", "60", "--device", "cpu", "--out", str(tmp_path / "api")])
    assert set(results) == {"phase1", "fsa", "none"}
    assert all(0.0 <= r["balanced_accuracy"] <= 1.0 for r in results.values())
    assert (tmp_path / "api" / "features.h5").is_file() and (tmp_path / "api" / "fsa.pt").is_file()
