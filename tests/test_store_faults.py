"""Damaged, locked and very large stores (issue 19; docs/reliability.md, "Feature stores").

Every refusal is checked with test_reliability's `assert_refused`: exit 2, one `error:` line,
no traceback, empty stdout, and every file in the folder byte for byte as before.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from ltkit.artifacts import make_lineage, save_torch_artifact, versions
from ltkit.checkpoint import FORMAT, FORMAT_VERSION
from ltkit.cli import app
from ltkit.data import DatasetSpec, build_splits
from ltkit.errors import StoreError
from ltkit.models import create_model
from ltkit.store import ATTR_GROUP, StoreLayout, StoreWriter, create_store, open_store, pack_store
from storefixtures import DEFAULT_COUNTS, make_store
from test_reliability import ITERS, assert_refused, run, snapshot

REPO = Path(__file__).resolve().parents[1]
READERS = ("inspect", "confusing-classes", "augment-finetune", "evaluate")


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("good") / "features.h5")


def _copy_edit(src: Path, dst: Path, edit) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def _stage_args(stage: str, folder: Path) -> list[str]:
    return {"inspect": [], "evaluate": [], "confusing-classes": ["--out", str(folder / "t.pt")],
            "augment-finetune": [*ITERS, "--out", str(folder / "c.pt")]}[stage]


def _refused_by_every_reader(bad: Path, needle: str, stages=READERS) -> None:
    before = snapshot(bad.parent)
    for stage in stages:
        assert_refused(run(stage, str(bad), *_stage_args(stage, bad.parent), "--quiet"), needle,
                       folder=bad.parent, before=before)


# ---- 1. train_counts are verified against the labels ------------------------------------------

def test_reversed_train_counts_are_refused_not_trusted(good, tmp_path):
    """A reversed train_counts attribute made evaluate report medium 97.35 % for 72.35 %."""
    reverse = lambda f: f.attrs.modify("train_counts", f.attrs["train_counts"][::-1].copy())  # noqa: E731
    bad = _copy_edit(good, tmp_path / "bad.h5", reverse)
    with pytest.raises(StoreError, match="train_counts attribute disagrees with /train/labels"):
        open_store(bad)
    _refused_by_every_reader(bad, "train_counts attribute disagrees with /train/labels (class 0: 2 in the "
                                  "attribute, 120 labels)")
    with open_store(good) as st:  # every consumer gets the verified counts
        assert st.train_counts.tolist() == list(DEFAULT_COUNTS)


# ---- 2. many classes ------------------------------------------------------------------------------

def _store_of(path: Path, k: int, rows: int = 12) -> Path:
    """A finished store of `k` classes and a few rows (most classes have no image)."""
    labels = (np.arange(rows) * 7919) % k  # (rows,) spread over the classes
    attrs = {"class_names": [f"class{i}" for i in range(k)],
             "train_counts": np.bincount(labels, minlength=k).tolist(), "num_classes": k,
             "feature_shape": [4, 1, 1], "arch": "fixture", "layer": "forward_features", "head": "linear",
             "dataset": {"name": "synthetic"}, "backbone_path": "b.pt", "backbone_sha256": "0" * 64,
             "ltkit_version": "0", "options": {}, "seed": 0, "lineage": {}, "train_views": 0, "spatial_splits": []}
    weight, bias = np.random.default_rng(0).normal(size=(k, 4)).astype(np.float32), np.zeros(k, np.float32)
    create_store(path, StoreLayout(4, 1, 1, k, {"train": rows, "test": rows}, ()), attrs=attrs,
                 classifier={"kind": "linear", "weight": weight, "bias": bias},
                 columns={s: {"labels": labels.astype(np.int64)} for s in ("train", "test")})
    pooled = np.abs(np.random.default_rng(1).normal(size=(rows, 4))).astype(np.float32)
    with StoreWriter(path) as writer:
        for split in ("train", "test"):
            writer.write(split, 0, pooled=pooled, logits=pooled @ weight.T + bias)
        writer.mark_complete()
    return path


def test_large_attributes_live_in_datasets_and_small_stores_keep_the_old_layout(good, tmp_path):
    """HDF5 (libver earliest) holds at most 64 KiB per attribute: 4,096 class names (16 bytes
    each) did not fit. Longer arrays are written to /attrs/NAME; both layouts read alike."""
    big = _store_of(tmp_path / "big.h5", 5000)
    with h5py.File(big, "r") as f:
        assert "class_names" not in f.attrs and f[f"{ATTR_GROUP}/class_names"].shape == (5000,)
        assert f[f"{ATTR_GROUP}/train_counts"].dtype == np.int64 and f.attrs["num_classes"] == 5000
    with h5py.File(good, "r") as f:  # a store of few classes: every attribute at the root, as before
        assert ATTR_GROUP not in f and len(f.attrs["class_names"]) == 6
    pack_store(big, tmp_path / "packed.h5", "lzf")
    with open_store(big) as st, open_store(tmp_path / "packed.h5") as packed:
        assert st.class_names[4999] == "class4999" and st.train_counts.sum() == 12
        assert packed.attrs == st.attrs
    result = run("inspect", str(big), "--json")
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)["classes"]) == 5000 and "4940 more" in result.stderr


def _checkpoint_of(path: Path, k: int) -> Path:
    """A resnet32 checkpoint (random weights) for `k` synthetic classes, one 8x8 image each."""
    spec = DatasetSpec("synthetic", num_classes=k, n_max=1, imbalance=1, val_per_class=0, test_per_class=1,
                       image_size=8)
    splits = build_splits(spec, train_augment=False)
    torch.manual_seed(0)
    model = create_model("resnet32", k, splits.in_channels)
    return save_torch_artifact({
        "format": FORMAT, "format_version": FORMAT_VERSION, "model_state": model.state_dict(),
        "arch": "resnet32", "head": "linear", "num_classes": k, "in_channels": splits.in_channels,
        "class_names": splits.class_names, "class_counts": list(splits.train_counts),
        "dataset": dataclasses.asdict(spec), "config": {}, "lineage": make_lineage({}, {}, 0),
        "versions": versions(), "metrics": {}}, path)


@pytest.mark.parametrize("k", [4100, pytest.param(10_000, marks=pytest.mark.slow)])  # 10,000: a minute of CPU
def test_many_classes_extract_evaluate_and_report(tmp_path, k):
    """extract failed at 4,096 classes ("object header message is too large"); the report's
    confusion matrix of 10,000 classes took a minute and 9 GB: now drawn in blocks of classes."""
    ckpt = _checkpoint_of(tmp_path / "b.pt", k)
    store = tmp_path / "s.h5"
    result = run("extract", str(ckpt), "--out", str(store), "--no-spatial", "--batch-size", "2000",
                 "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.stderr
    report = tmp_path / "report"
    result = run("evaluate", str(store), "--report", str(report), "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["num_classes"] == k and len(metrics["per_class"]) == k
    assert metrics["per_class"][k - 1]["name"] == f"class{k - 1}" and metrics["splits"]["few"]["classes"] == k
    png = report / "confusion_matrix.png"
    assert png.stat().st_size < 1 << 20 and (report / "per_class_accuracy.png").exists()


def test_a_confusion_matrix_of_many_classes_is_drawn_in_blocks(tmp_path):
    from ltkit.plots import BLOCK_ABOVE, _ordered_blocks, plot_confusion

    k = 3 * BLOCK_ABOVE + 5  # blocks of 4 classes: 302 cells a side
    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 3, (k, k))
    order = np.argsort(-rng.integers(1, 100, k), kind="stable")
    blocks = _ordered_blocks(confusion, order, 4)
    assert blocks.shape == (302, 302) and blocks.sum() == confusion.sum()
    np.testing.assert_array_equal(blocks[1, 2], confusion[np.ix_(order[4:8], order[8:12])].sum())
    np.testing.assert_array_equal(blocks[-1, -1], confusion[np.ix_(order[1204:], order[1204:])].sum())
    png = plot_confusion(confusion, [f"c{i}" for i in range(k)], rng.integers(1, 100, k), tmp_path / "cm.png")
    assert png.stat().st_size < 1 << 20


# ---- 3. a store locked by a writer -------------------------------------------------------------

HOLD = """
import sys, h5py
f = h5py.File(sys.argv[1], "r+")  # a writer: HDF5 takes an exclusive lock
open(sys.argv[2], "w").close()
sys.stdin.read()  # hold it until the test closes our stdin
"""


def test_a_store_locked_by_a_writer_is_reported_as_locked(good, tmp_path):
    if os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() == "FALSE":
        pytest.skip("HDF5 file locking is switched off in this environment")
    store = tmp_path / "store" / "s.h5"
    store.parent.mkdir()
    shutil.copy(good, store)
    marker = tmp_path / "holding"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(store), str(marker)], stdin=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():  # the known point: the writer holds the file
            assert holder.poll() is None and time.monotonic() < deadline, "the holder did not start"
            time.sleep(0.05)
        _refused_by_every_reader(store, "is locked by another process writing it")
        result = run("inspect", str(store), "--quiet")
        assert "HDF5_USE_FILE_LOCKING" in result.stderr and "truncated" not in result.stderr
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert run("inspect", str(store), "--quiet").exit_code == 0  # released: it reads again


# ---- 4. the schema version's type ---------------------------------------------------------------

def test_schema_version_of_another_type_says_what_is_wrong(good, tmp_path):
    bad = _copy_edit(good, tmp_path / "bad.h5", lambda f: f.attrs.__setitem__("schema_version", "1"))
    _refused_by_every_reader(bad, "has schema_version '1' (a str), not an integer")


# ---- 5. CAMs outside [0, 1] ---------------------------------------------------------------------

@pytest.mark.parametrize("value", [1.5, -0.25])
def test_cams_outside_the_unit_range_are_refused_where_read(good, tmp_path, value):
    def edit(f):
        cams = f["train/cams"][()]
        cams[7, 1, 2] = value
        f["train/cams"][...] = cams

    bad = _copy_edit(good, tmp_path / "bad.h5", edit)
    with open_store(bad) as st:  # opening does not read the maps; reading them refuses, per block
        with pytest.raises(StoreError, match=r"outside \[0, 1\]"):
            st.read("train", "cams")
        with pytest.raises(StoreError, match=r"outside \[0, 1\]"):
            list(st.iter_chunks("train", "cams", rows=4))
        assert len(list(st.iter_chunks("train", "cams", rows=4, stop=4))) == 1  # blocks before it read fine
    before = snapshot(tmp_path)
    for extra in ([], ["--resident-gib", "0"]):  # maps held in memory, and read on demand
        result = run("augment-finetune", str(bad), "--augment", "fsa", *ITERS, *extra, "--quiet",
                     "--out", str(tmp_path / "c.pt"))
        assert_refused(result, "/train/cams holds values from", folder=tmp_path, before=before)


# ---- 6. attributes inspect used to print a traceback on; NaN in JSON ---------------------------

@pytest.mark.parametrize("name, value, needle", [
    ("class_names", np.arange(6), "class_names = a list of 6 ints; expected 6 strings"),
    ("dataset", json.dumps([1, 2]), "dataset = a list of 2 ints; expected JSON text of an object"),
    ("seed", float("nan"), "seed = nan (a non-finite float)"),
    ("num_classes", 6.0, "num_classes = 6.0 (a float)"),
    ("spatial_splits", np.array([], dtype=h5py.string_dtype()), "/train/features is there but spatial_splits (none)"),
])
def test_damaged_attributes_are_one_line_in_every_reader(good, tmp_path, name, value, needle):
    bad = _copy_edit(good, tmp_path / "bad.h5", lambda f: f.attrs.__setitem__(name, value))
    _refused_by_every_reader(bad, needle)


def test_inspect_json_writes_nan_inside_json_attributes_as_null(good, tmp_path):
    def edit(f):
        options = json.loads(f.attrs["options"])
        f.attrs["options"] = json.dumps(options | {"lr": float("nan"), "clip": float("inf")})  # NaN, Infinity

    odd = _copy_edit(good, tmp_path / "odd.h5", edit)
    result = run("inspect", str(odd), "--json")
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert info["provenance"]["options"]["lr"] is None and info["provenance"]["options"]["clip"] is None


# ---- 7. random damage to every root attribute and to the core datasets -------------------------

KINDS = {"schema": "str", "schema_version": "int", "complete": "int", "class_names": "strs",
         "train_counts": "ints", "num_classes": "int", "feature_shape": "ints", "arch": "str", "layer": "str",
         "head": "str", "dataset": "json", "backbone_path": "str", "backbone_sha256": "str",
         "ltkit_version": "str", "options": "json", "seed": "int", "lineage": "json", "train_views": "int",
         "spatial_splits": "strs"}
DELETE = object()


def _strs(values) -> np.ndarray:
    return np.array([str(v) for v in values], dtype=h5py.string_dtype())


def _damage(kind: str, how: str, current, rng: np.random.Generator):
    """An invalid value of `how` for an attribute of `kind` (DELETE: remove it)."""
    n = len(current) if isinstance(current, np.ndarray) else 1
    k = max(n, 2)
    scalar = kind in ("str", "int", "json")
    if how == "deleted":
        return DELETE
    if how in ("nan", "inf"):
        bad = np.nan if how == "nan" else -np.inf if rng.random() < 0.5 else np.inf
        return json.dumps(bad) if kind == "json" else bad if scalar else np.full(k, bad)
    if how == "wrong-type":
        return {"str": 7, "int": 1.5, "json": 12, "strs": 3.5, "ints": "abc"}[kind]
    if how == "wrong-length":
        if kind == "spatial_splits":
            return _strs(["train", "test"])  # /test keeps no maps in this store
        grown = n + int(rng.choice([-1, 1])) if n > 1 else n + 1
        return {"str": _strs(["a", "b"]), "int": np.array([1, 2]), "json": json.dumps([[1], [2]]),
                "strs": _strs(f"c{i}" for i in range(grown)), "ints": np.ones(grown, np.int64)}[kind]
    if how == "negative":
        if kind == "ints":
            values = np.array(current, np.int64)
            values[rng.integers(len(values))] = -1
            return values
        return {"str": -1, "int": -1, "json": "-1", "strs": np.full(k, -1)}[kind]
    if how == "huge":
        if kind == "ints":
            values = np.array(current, np.int64)
            values[rng.integers(len(values))] = 2**62
            return values
        return {"str": 1e300, "int": 1e300, "json": "1e999", "strs": np.full(k, 1e300)}[kind]
    if how == "string-for-number":  # and, for a text attribute, a number for the string
        if kind == "ints":
            return _strs(np.asarray(current).tolist())
        return {"str": int(rng.integers(0, 100)), "int": str(current), "json": json.dumps(3),
                "strs": np.arange(k)}[kind]
    if how == "list-for-dict":
        return json.dumps([1, 2]) if kind == "json" else np.array([1, 2]) if scalar else json.dumps({"a": 1})
    raise ValueError(how)


ATTR_DAMAGE = ("wrong-type", "wrong-length", "nan", "inf", "negative", "huge", "deleted",
               "string-for-number", "list-for-dict")
CORE_DATASETS = ("train/labels", "train/pooled", "train/logits", "train/features", "train/cams",
                 "test/labels", "test/pooled", "test/logits", "classifier/weight", "classifier/bias")
DATASET_DAMAGE = ("dtype", "rows", "width", "flat", "deleted")


def _damaged_dataset(f: h5py.File, where: str, how: str, rng: np.random.Generator) -> None:
    data = f[where][()]
    del f[where]
    if how == "deleted":
        return
    if how == "dtype":
        data = data.astype(np.int32 if data.dtype.kind == "f" else np.float64)
    elif how == "rows":
        data = data[: len(data) - int(rng.integers(1, 3))] if len(data) > 2 else np.concatenate([data, data])
    elif how == "width":
        data = np.concatenate([data, data[..., :1]], axis=-1) if data.ndim > 1 else data[:, None]
    elif how == "flat":
        data = data.reshape(-1)[:-1] if data.ndim == 1 else data.reshape(-1)
    f.create_dataset(where, data=data)


def _cases(seed: int = 19) -> list[tuple[str, str, int]]:
    cases = [("attr", name, i) for name in KINDS for i in range(len(ATTR_DAMAGE))]
    cases += [("dataset", where, i) for where in CORE_DATASETS for i in range(len(DATASET_DAMAGE))]
    order = np.random.default_rng(seed).permutation(len(cases))
    return [cases[i] for i in order]


def test_random_damage_is_always_one_line_and_leaves_the_input(good, tmp_path, monkeypatch):
    """Every root attribute x every kind of damage, every core dataset x shape / dtype damage
    (seeded): inspect, evaluate and confusing-classes each exit 2 with one line."""
    import typer.testing

    command = typer.testing._get_command(app)  # built once: building it is most of a run's time
    monkeypatch.setattr(typer.testing, "_get_command", lambda _: command)
    rng = np.random.default_rng(19)
    start, cases = time.monotonic(), _cases()
    assert len(cases) >= 200
    for target, name, how in cases:
        bad = tmp_path / "bad.h5"
        with h5py.File(shutil.copy(good, bad), "r+") as f:
            if target == "dataset":
                label = f"{name}: {DATASET_DAMAGE[how]}"
                _damaged_dataset(f, name, DATASET_DAMAGE[how], rng)
            else:
                label = f"{name}: {ATTR_DAMAGE[how]}"
                value = _damage(KINDS[name], ATTR_DAMAGE[how], f.attrs[name], rng)
                del f.attrs[name]
                if value is not DELETE:
                    f.attrs[name] = value
        before = snapshot(tmp_path)
        for stage in ("inspect", "evaluate", "confusing-classes"):
            result = run(stage, str(bad), *_stage_args(stage, tmp_path), "--quiet")
            try:
                assert_refused(result, str(bad), folder=tmp_path, before=before)
            except AssertionError as exc:
                raise AssertionError(f"{stage} on {label}: {exc}") from None
        bad.unlink()
    assert time.monotonic() - start < 30  # a few hundred runs, kept fast
