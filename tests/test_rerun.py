"""A rerun of a stage with the same options reuses its artifact; other options need --force."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ltkit.cli import app
from storefixtures import make_store


def run(*args: str):
    return CliRunner().invoke(app, [*args, "--device", "cpu"] if args[0] == "augment-finetune"
                              else list(args))


@pytest.fixture()
def store(tmp_path) -> Path:
    return make_store(tmp_path / "s.h5")


def _reused(first, again, path: Path, before: int) -> None:
    assert first.exit_code == 0 and again.exit_code == 0, (first.stderr, again.stderr)
    assert again.stdout.strip() == first.stdout.strip() == str(path)
    assert "reusing" in again.stderr and path.stat().st_mtime_ns == before


def test_confusing_classes_rerun_reuses_the_table(store, tmp_path):
    out = tmp_path / "t.pt"
    first = run("confusing-classes", str(store), "--out", str(out))
    before = out.stat().st_mtime_ns
    _reused(first, run("confusing-classes", str(store), "--out", str(out)), out, before)
    other = run("confusing-classes", str(store), "--top", "2", "--out", str(out))
    assert other.exit_code == 2 and "--force" in other.stderr and out.stat().st_mtime_ns == before
    assert "made with other options (top)" in other.stderr  # says which


def test_a_rerun_after_the_parent_changed_says_so(store, tmp_path):
    """Same options, but the store was rebuilt at the same path: the refusal names the changed
    parent, not "other options"."""
    out = tmp_path / "t.pt"
    assert run("confusing-classes", str(store), "--out", str(out)).exit_code == 0
    make_store(store, seed=1)  # another store at the same path
    again = run("confusing-classes", str(store), "--out", str(out))
    assert again.exit_code == 2 and "hash differs" in again.stderr and "other options" not in again.stderr


def test_augment_finetune_rerun_reuses_the_classifier(store, tmp_path):
    table = tmp_path / "t.pt"
    assert run("confusing-classes", str(store), "--out", str(table)).exit_code == 0
    out = tmp_path / "c.pt"
    args = ("augment-finetune", str(table), "--iterations", "20", "--out", str(out))
    first = run(*args)
    before = out.stat().st_mtime_ns
    _reused(first, run(*args), out, before)
    other = run(*args, "--tau-s", "0.6")
    assert other.exit_code == 2 and "--force" in other.stderr and out.stat().st_mtime_ns == before
    assert "other options (tau_s)" in other.stderr
    assert run(*args, "--tau-s", "0.6", "--force").exit_code == 0
    assert out.stat().st_mtime_ns != before


def test_extract_rerun_reuses_the_store(tmp_path):
    ckpt = tmp_path / "b.pt"
    assert CliRunner().invoke(app, ["train-backbone", "--data", "synthetic", "--num-classes", "3",
                                    "--n-max", "12", "--imbalance", "2", "--val-per-class", "2",
                                    "--epochs", "1", "--device", "cpu", "--out", str(ckpt)]).exit_code == 0
    out = tmp_path / "f.h5"
    first = run("extract", str(ckpt), "--out", str(out), "--device", "cpu")
    before = out.stat().st_mtime_ns
    _reused(first, run("extract", str(ckpt), "--out", str(out), "--device", "cpu"), out, before)
    other = run("extract", str(ckpt), "--out", str(out), "--device", "cpu", "--train-views", "1")
    assert other.exit_code == 2 and "--force" in other.stderr and out.stat().st_mtime_ns == before


def test_train_backbone_rerun_without_root_reuses_a_default_root_checkpoint(tmp_path, monkeypatch):
    """A source that fills in its default folder records it in the checkpoint; the same
    command without --root must still find the checkpoint made with the same options."""
    import ltkit.data.fashion_mnist as fm
    from fakedata import write_fashion_mnist

    write_fashion_mnist(tmp_path / "fm", per_class=12, test_per_class=2)
    monkeypatch.setattr(fm, "DEFAULT_ROOT", str(tmp_path / "fm"))
    out = tmp_path / "b.pt"
    args = ["train-backbone", "--data", "fashion-mnist-lt", "--imbalance", "2", "--val-per-class", "2",
            "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--out", str(out)]
    first = run(*args)
    before = out.stat().st_mtime_ns
    _reused(first, run(*args), out, before)
    other = run(*args[:-2], "--lr", "0.05", "--out", str(out))
    assert other.exit_code == 2 and "--force" in other.stderr and "other options (lr)" in other.stderr


def test_augment_finetune_rerun_after_a_default_changed_is_refused(store, tmp_path, monkeypatch):
    """The same request resolves to another run once a method's default schedule changed
    (la-loss went from 10 to 300 epochs): the old classifier is not silently reused."""
    from ltkit.methods import get_method

    table = tmp_path / "t.pt"
    assert run("confusing-classes", str(store), "--out", str(table)).exit_code == 0
    out = tmp_path / "c.pt"
    args = ("augment-finetune", str(table), "--classifier", "crt", "--augment", "none", "--out", str(out))
    first = run(*args)
    before = out.stat().st_mtime_ns
    _reused(first, run(*args), out, before)
    crt = type(get_method("crt"))
    monkeypatch.setattr(crt, "schedule", crt.schedule | {"epochs": 2 * crt.schedule["epochs"]})
    again = run(*args)
    assert again.exit_code == 2 and out.stat().st_mtime_ns == before, again.stderr
    assert "another schedule" in again.stderr and "iterations" in again.stderr and "--force" in again.stderr
    assert run(*args, "--force").exit_code == 0 and out.stat().st_mtime_ns != before


def test_a_method_options_default_changed_is_another_run(store, tmp_path, monkeypatch):
    """A method option left to its default (la-loss's tau) that moved is another run; one the
    user gave stays theirs."""
    from ltkit.methods import get_method

    out = tmp_path / "la.pt"
    args = ("augment-finetune", str(store), "--classifier", "la-loss", "--iterations", "20", "--out", str(out))
    assert run(*args).exit_code == 0
    la = type(get_method("la-loss"))
    monkeypatch.setattr(la, "options", {"tau": 2.0})
    again = run(*args)
    assert again.exit_code == 2 and "method option tau 1.0 then, 2.0 now" in again.stderr, again.stderr
    pinned = run(*args, "--method-option", "tau=2.0")  # the request itself differs now
    assert pinned.exit_code == 2 and "other options (method_options)" in pinned.stderr, pinned.stderr


def test_a_spatial_artifact_that_recorded_its_resolved_head_is_the_same_run(tmp_path):
    """Before, a spatial artifact's request held head_depth 2 (the default, resolved) and no
    head_block: the same command still reuses it; another block does not."""
    import torch

    store = make_store(tmp_path / "m.h5", spatial_splits=("train", "val", "test"))
    out = tmp_path / "sp.pt"
    args = ("augment-finetune", str(store), "--head", "spatial", "--classifier", "crt", "--iterations", "5",
            "--out", str(out))
    assert run(*args).exit_code == 0
    artifact = torch.load(out, weights_only=True)
    artifact["options"]["request"] |= {"head_depth": 2}
    del artifact["options"]["head_block"]
    torch.save(artifact, out)
    before = out.stat().st_mtime_ns
    _reused(run(*args), run(*args), out, before)
    other = run(*args, "--head-block", "separable")
    assert other.exit_code == 2 and "head_block conv then, separable now" in other.stderr, other.stderr
