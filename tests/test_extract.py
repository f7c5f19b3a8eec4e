"""extract: the store's invariants against the backbone and the data, the CLI contract,
Ctrl-C and resume in process, and real SIGKILL / SIGINT of `python -m ltkit extract`."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import ltkit.extract as extract_mod
from ltkit.artifacts import make_lineage, save_torch_artifact, versions
from ltkit.cams import label_cams
from ltkit.checkpoint import FORMAT, FORMAT_VERSION, load_backbone
from ltkit.cli import app
from ltkit.data import DatasetSpec, build_splits
from ltkit.extract import SeededViews, view_seed
from ltkit.models import MODELS, create_model
from ltkit.store import VIEWS, open_store
from pausing import DEADLINE_S, interruptible, pause_env, wait_until_paused

REPO = Path(__file__).resolve().parents[1]
SPEC = DatasetSpec("synthetic", num_classes=4, n_max=30, counts=[24, 10, 5, 3], val_per_class=2,
                   test_per_class=4, image_size=8)  # 42 train, 8 val, 16 test images of 8x8


def make_checkpoint(path: Path, head: str = "linear") -> Path:
    """A backbone checkpoint as ltkit.checkpoint describes it, with random weights."""
    splits = build_splits(SPEC, train_augment=False)
    torch.manual_seed(0)
    model = create_model("resnet32", 4, splits.in_channels, head=head)
    for module in model.modules():  # non-trivial batch-norm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1), module.running_var.uniform_(0.5, 1.5)
    return save_torch_artifact({
        "format": FORMAT, "format_version": FORMAT_VERSION, "model_state": model.state_dict(),
        "arch": "resnet32", "head": head, "num_classes": 4, "in_channels": splits.in_channels,
        "class_names": splits.class_names, "class_counts": list(splits.train_counts),
        "dataset": dataclasses.asdict(SPEC), "config": {}, "lineage": make_lineage({}, {}, 0),
        "versions": versions(), "metrics": {}}, path)


def run_cli(*args: str, input: str | None = None):
    return CliRunner().invoke(app, ["extract", *args], input=input)


def arrays(path: Path) -> dict[str, np.ndarray]:
    with open_store(path) as st:
        return {f"{s}/{n}": st.read(s, n) for s in (*st.splits, *([VIEWS] if st.views else [])) for n in st.names(s)}


def assert_same_datasets(a: Path, b: Path) -> None:
    left, right = arrays(a), arrays(b)
    assert left.keys() == right.keys()
    for key in left:
        np.testing.assert_array_equal(left[key], right[key], err_msg=key)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "backbone.pt")


RESUME_ARGS = ["--batch-size", "4", "--train-views", "2", "--device", "cpu", "--seed", "3"]


@pytest.fixture(scope="module")
def reference(ckpt, tmp_path_factory) -> Path:
    """An uninterrupted extraction with RESUME_ARGS, to compare resumed runs with."""
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as every test (conftest) and the subprocesses (OMP_NUM_THREADS=1)
    try:
        result = run_cli(str(ckpt), "--out", str(out), *RESUME_ARGS, "--quiet")
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.stderr
    return out


def test_store_invariants_against_backbone_and_data(ckpt, tmp_path):
    out = tmp_path / "s.h5"
    result = run_cli(str(ckpt), "--out", str(out), "--batch-size", "16", "--train-views", "1",
                     "--spatial-splits", "train,test", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{out}\n"  # stdout carries only the path
    assert "extract" in result.stderr and "img/s" in result.stderr
    splits = build_splits(SPEC, train_augment=False)
    model, info = load_backbone(ckpt)
    with open_store(out) as st:
        assert st.class_names == splits.class_names and st.train_counts.tolist() == splits.train_counts
        assert st.splits == ["train", "val", "test"] and st.views == 1
        assert st.has("test", "features") and not st.has("val", "features")
        np.testing.assert_array_equal(st.read("train", "labels"), splits.train_labels)
        np.testing.assert_array_equal(st.read("val", "labels"), splits.val_labels)
        np.testing.assert_array_equal(st.read("test", "labels"), splits.test_labels)
        np.testing.assert_array_equal(st.read("train", "source_index"), splits.kept_indices)
        assert np.bincount(st.read("train", "labels")).tolist() == splits.train_counts
        head = st.classifier()
        np.testing.assert_array_equal(head["weight"], model.fc.weight.detach().numpy())
        for split in ("train", "test", VIEWS):
            features = st.read(split, "features").astype(np.float32)  # (N, C, H, W)
            pooled, labels = st.read(split, "pooled"), st.read(split, "labels")
            scale = max(1.0, float(np.abs(pooled).max()))
            np.testing.assert_allclose(features.mean(axis=(2, 3)), pooled, atol=2e-3 * scale, rtol=2e-3)
            np.testing.assert_allclose(st.read(split, "logits"), pooled @ head["weight"].T + head["bias"],
                                       rtol=1e-4, atol=1e-4)
            cams = label_cams(torch.from_numpy(features), torch.from_numpy(head["weight"]),
                              torch.from_numpy(labels)).numpy()
            np.testing.assert_allclose(st.read(split, "cams").astype(np.float32), cams, atol=1e-3)
        images = torch.stack([splits.test[i][0] for i in range(4)])  # the backbone itself, no augmentation
        with torch.no_grad():
            np.testing.assert_allclose(st.read("test", "logits", [0, 1, 2, 3]), model(images).numpy(),
                                       rtol=1e-4, atol=1e-4)
        assert st.attrs["backbone_sha256"] == st.attrs["lineage"]["parents"]["backbone"]["sha256"]
        assert st.attrs["arch"] == "resnet32" and st.attrs["options"]["batch_size"] == 16
    assert not list(tmp_path.glob("*.partial*"))


def test_cosine_head_and_no_spatial(tmp_path):
    ckpt = make_checkpoint(tmp_path / "cos.pt", head="cosine")
    result = run_cli(str(ckpt), "--no-spatial", "--device", "cpu", "--batch-size", "32", "--quiet")
    assert result.exit_code == 0, result.stderr
    out = Path(result.stdout.strip())
    assert out == tmp_path / "cos.h5" and result.stderr == ""  # default: beside the checkpoint
    with open_store(out) as st:
        head = st.classifier()
        assert head["kind"] == "cosine" and head["bias"] is None and head["scale"] == 30.0
        assert not st.has("train", "features") and st.attrs["spatial_splits"] == []
        pooled = st.read("train", "pooled")
        unit = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        wunit = head["weight"] / np.linalg.norm(head["weight"], axis=1, keepdims=True)
        np.testing.assert_allclose(st.read("train", "logits"), 30.0 * unit @ wunit.T, rtol=1e-4, atol=1e-4)


def test_cli_refusals(ckpt, tmp_path):
    out = tmp_path / "s.h5"
    out.write_bytes(b"an existing store")
    other = tmp_path / "other.pt"
    torch.save({"format": "ltkit-classifier"}, other)
    for args, message in [((str(ckpt), "--out", str(out)), "--force"),
                          ((str(ckpt), "--no-spatial", "--spatial-splits", "test"), "not both"),
                          ((str(ckpt), "--out", str(tmp_path / "x.h5"), "--compression", "zip"), "compression"),
                          ((str(ckpt), "--out", str(tmp_path / "x.h5"), "--spatial-splits", "dev"), "dev"),
                          ((str(tmp_path / "missing.pt"),), "does not exist"),
                          ((str(other), "--out", str(tmp_path / "y.h5")), "not an ltkit-backbone artifact")]:
        result = run_cli(*args)
        assert result.exit_code == 2, (args, result.stderr)
        assert message in result.stderr and result.stdout == ""
    assert out.read_bytes() == b"an existing store"


def test_second_extract_of_the_same_output_is_refused(ckpt, tmp_path):
    import fcntl

    out = tmp_path / "s.h5"
    with open(f"{out}.partial.lock", "a+") as held:  # as a running extract holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = run_cli(str(ckpt), "--out", str(out), "--device", "cpu")
    assert result.exit_code == 2 and "another ltkit extract is writing" in result.stderr
    assert not Path(f"{out}.partial").exists()


def test_non_finite_backbone_is_refused(tmp_path):
    ckpt = make_checkpoint(tmp_path / "nan.pt")
    state = torch.load(ckpt, weights_only=True)
    first = next(k for k in state["model_state"] if k.endswith("weight"))
    state["model_state"][first].fill_(float("nan"))
    torch.save(state, ckpt)
    result = run_cli(str(ckpt), "--device", "cpu", "--no-spatial")
    assert result.exit_code == 2 and "NaN or infinite" in result.stderr


def test_stdin_dash_workers_and_compression(ckpt, reference, tmp_path):
    out = tmp_path / "packed.h5"
    result = run_cli("-", "--out", str(out), *RESUME_ARGS, "--compression", "lzf", "--workers", "2", "--quiet",
                     input=f"{ckpt}\n")
    assert result.exit_code == 0, result.stderr
    assert_same_datasets(out, reference)
    assert not list(tmp_path.glob("*.partial*"))


def test_views_are_seeded_per_image(ckpt):
    augmented = build_splits(SPEC, train_augment=True).train
    views = SeededViews(augmented, views=2, seed=3)
    n = len(augmented)
    assert len(views) == 2 * n
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = views[n + 5][0]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    assert torch.equal(views[n + 5][0], first)  # same (seed, view, image): same augmentation
    assert view_seed(3, 0, 5) != view_seed(3, 1, 5) != view_seed(4, 1, 5)


def test_ctrl_c_resume_and_other_options(ckpt, reference, tmp_path, monkeypatch):
    out = tmp_path / "s.h5"
    real, calls = extract_mod.extract_batch, []

    def interrupt_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(extract_mod, "extract_batch", interrupt_third)
    result = run_cli(str(ckpt), "--out", str(out), *RESUME_ARGS)
    assert result.exit_code == 130 and "rerun the same command to resume" in result.stderr
    monkeypatch.setattr(extract_mod, "extract_batch", real)
    record = json.loads(Path(f"{out}.partial.json").read_text())
    assert record["done"]["train"] == 8 and not out.exists()  # the two batches before Ctrl-C

    other = run_cli(str(ckpt), "--out", str(out), *RESUME_ARGS[:-2], "--seed", "4")
    assert other.exit_code == 2 and "other options (seed)" in other.stderr
    resumed = run_cli(str(ckpt), "--out", str(out), *RESUME_ARGS)
    assert resumed.exit_code == 0, resumed.stderr
    assert "resuming" in resumed.stderr and "8 of 150 rows" in resumed.stderr
    assert_same_datasets(out, reference)
    assert not Path(f"{out}.partial").exists() and not Path(f"{out}.partial.json").exists()


def test_damaged_partial_is_started_over(ckpt, reference, tmp_path, monkeypatch):
    out = tmp_path / "s.h5"

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(extract_mod, "extract_batch", interrupt)
    assert run_cli(str(ckpt), "--out", str(out), *RESUME_ARGS).exit_code == 130
    monkeypatch.undo()
    partial = Path(f"{out}.partial")
    partial.write_bytes(partial.read_bytes()[:2000])  # as if the disk lost its tail
    result = run_cli(str(ckpt), "--out", str(out), *RESUME_ARGS)
    assert result.exit_code == 0, result.stderr
    assert "cannot be resumed" in result.stderr and "starting it over" in result.stderr
    assert_same_datasets(out, reference)


def _done(out: Path) -> int:
    try:
        return sum(json.loads(Path(f"{out}.partial.json").read_text())["done"].values())
    except (OSError, ValueError):
        return 0


def _spawn(ckpt: Path, out: Path, pause_rows: int | None = None) -> subprocess.Popen:
    """`ltkit extract`, asked to pause once `pause_rows` rows are recorded (ltkit.testhooks)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))  # one thread, as the reference
    if pause_rows is not None:
        env = pause_env(env, "extract-rows", pause_rows, _marker(out))
    return subprocess.Popen([sys.executable, "-m", "ltkit", "extract", str(ckpt), "--out", str(out), *RESUME_ARGS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                            preexec_fn=interruptible)


def _marker(out: Path) -> Path:
    return out.with_name("paused")


@pytest.mark.e2e
def test_real_kills_resume_to_the_same_store(ckpt, reference, tmp_path):
    out, total = tmp_path / "s.h5", 150  # 42 + 8 + 16 rows + 2 x 42 views, batches of 4
    # 1. SIGKILL at a random early moment: during start-up, creation or the first rows (the
    #    stage pauses at a third of the rows, so the kill lands before it finishes, however busy)
    first = _spawn(ckpt, out, pause_rows=total // 3)
    delay = random.uniform(0.0, 6.0)
    start = time.monotonic()
    while first.poll() is None and time.monotonic() - start < delay and not _marker(out).exists():
        time.sleep(0.02)
    first.kill()
    first.wait()
    assert not out.exists(), f"SIGKILL after {delay:.2f} s"
    # 2. SIGKILL once rows are written
    second = _spawn(ckpt, out, pause_rows=_done(out) + 8)
    wait_until_paused(second, _marker(out))
    second.kill()
    second.wait()
    done = _done(out)
    assert done > 0 and Path(f"{out}.partial").exists() and not out.exists()
    # 3. Ctrl-C: exit 130, resumable
    third = _spawn(ckpt, out, pause_rows=done + 8)
    wait_until_paused(third, _marker(out))
    third.send_signal(signal.SIGINT)
    _, err = third.communicate(timeout=DEADLINE_S)
    assert third.returncode == 130, err[-500:]
    assert "resuming" in err and _done(out) > done
    # 4. the same command finishes it: the same datasets as an uninterrupted run
    fourth = _spawn(ckpt, out)
    stdout, err = fourth.communicate(timeout=120)
    assert fourth.returncode == 0, err[-500:]
    assert stdout == f"{out}\n" and "resuming" in err
    assert_same_datasets(out, reference)
    assert not Path(f"{out}.partial").exists() and not Path(f"{out}.partial.json").exists()


def test_1x1_maps_warn_at_extract_and_fsa_refuses_them(tmp_path):
    """torchvision's ResNet-18 on 16 px images ends in 1x1 maps: FSA has nothing to mix."""
    runner = CliRunner()
    ckpt, store = tmp_path / "b.pt", tmp_path / "f.h5"
    trained = runner.invoke(app, ["train-backbone", "--data", "synthetic", "--num-classes", "3",
                                  "--n-max", "12", "--imbalance", "2", "--val-per-class", "2",
                                  "--epochs", "1", "--arch", "resnet18", "--image-size", "16",
                                  "--device", "cpu", "--out", str(ckpt)])
    assert trained.exit_code == 0, trained.stderr
    extracted = runner.invoke(app, ["extract", str(ckpt), "--out", str(store), "--device", "cpu"])
    assert extracted.exit_code == 0, extracted.stderr
    assert "map 512x1x1" in extracted.stderr and "feature maps are 1x1" in extracted.stderr
    refused = runner.invoke(app, ["augment-finetune", str(store), "--iterations", "2", "--device", "cpu"])
    assert refused.exit_code == 2 and "1x1" in refused.stderr


@pytest.mark.parametrize("arch", MODELS.names())
def test_every_backbone_pools_as_the_store_records(arch):
    """extract pools through the model's own `forward_head(fmap, pre_logits=True)`: for every
    registered backbone that is the spatial mean of the map (docs/store.md), bit for bit."""
    model = create_model(arch, 3, 3).eval()
    fmap = torch.rand(2, model.feature_dim, 3, 5)  # (B, C, H, W)
    pooled = model.forward_head(fmap, pre_logits=True)  # (B, C)
    assert torch.equal(pooled, fmap.mean(dim=(2, 3)))
    assert torch.equal(model.forward_head(fmap), model.fc(pooled))
