"""Bad input, data problems, bad options and untrusted files across every stage (docs/reliability.md).

Every refusal is checked the same way (`assert_refused`): exit code 2, one line on stderr that
names the problem, no traceback, nothing on stdout, and every file that existed before is
byte for byte the same afterwards. Faults (kills, disk full) and concurrency are in
test_reliability_faults.py.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shlex
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fakedata import write_imagefolder, write_list_files
from ltkit.artifacts import make_lineage
from ltkit.classifiers import Classifier, save_classifier
from ltkit.cli import app
from ltkit.confusing import ConfusingConfig, build_table
from ltkit.store import SCHEMA_VERSION
from storefixtures import make_store
from test_extract import make_checkpoint

ITERS = ["--iterations", "3", "--batch-size", "32", "--device", "cpu"]  # a tiny fine-tuning
TINY_TRAIN = ["--data", "synthetic", "--num-classes", "4", "--n-max", "40", "--imbalance", "4",
              "--val-per-class", "4", "--image-size", "8", "--arch", "resnet32", "--batch-size", "32",
              "--epochs", "1", "--device", "cpu"]


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(app, list(args), input=input)


def snapshot(folder: Path) -> dict[str, str]:
    """relative path -> SHA-256 of every file under `folder`."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_refused(result, needle: str, *, folder: Path | None = None,
                   before: dict[str, str] | None = None) -> None:
    """Exit 2, one stderr line holding `needle`, no traceback, empty stdout, nothing changed."""
    err = result.stderr
    assert result.exit_code == 2, f"exit {result.exit_code}: {err[-800:]} {result.exception!r}"
    assert needle in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and result.stdout == ""
    if folder is not None:
        after = snapshot(folder)
        changed = [name for name, digest in before.items() if after.get(name) != digest]
        assert not changed, f"changed or removed: {changed}"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict[str, Path]:
    """A store (6 classes, 8 channels), its table, a classifier made from them, a checkpoint."""
    root = tmp_path_factory.mktemp("rel")
    store = make_store(root / "features.h5")
    table = build_table(store, ConfusingConfig(head_ratio=0.8), out=root / "features.table.pt")
    result = run("augment-finetune", str(table), *ITERS, "--out", str(root / "clf.pt"), "--quiet")
    assert result.exit_code == 0, result.stderr
    return {"root": root, "store": store, "table": table, "clf": root / "clf.pt",
            "ckpt": make_checkpoint(root / "backbone.pt")}


# ---- inputs that are not what they claim: feature stores -----------------------------------

def _edit(src: Path, dst: Path, edit) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def _scribble(src: Path, dst: Path, start: int, stop: int) -> Path:
    """A copy of `src` with bytes [start, stop) overwritten by random bytes."""
    data = bytearray(src.read_bytes())
    start, stop = start % len(data), stop % len(data) or len(data)
    data[start:stop] = np.random.default_rng(start).integers(0, 256, stop - start, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


def _write(dst: Path, data: bytes) -> Path:
    dst.write_bytes(data)
    return dst


def _set(name, value):
    def edit(f):
        ds = f[name]
        data = ds[()]
        data.flat[len(data.flat) // 2] = value
        ds[...] = data
    return edit


def _external_storage(f):
    raw = Path(f.filename).with_suffix(".raw")
    raw.write_bytes(np.zeros(8, np.float32).tobytes())
    f.create_dataset("train/outside", shape=(8,), dtype=np.float32, external=[(str(raw), 0, 32)])


def _virtual(f):
    source = Path(f.filename).with_suffix(".source.h5")
    with h5py.File(source, "w") as g:
        g["data"] = np.zeros(4, np.float32)
    layout = h5py.VirtualLayout(shape=(4,), dtype=np.float32)
    layout[:] = h5py.VirtualSource(str(source), "data", shape=(4,))
    f.create_virtual_dataset("train/outside", layout)


ALL = ("inspect", "confusing-classes", "augment-finetune", "evaluate")
BAD_STORES = {  # name -> (how to make it from a good store, what the error line says)
    "truncated": (lambda s, d: _write(d, s.read_bytes()[: s.stat().st_size // 2]), "truncated"),
    "scribbled-heap": (lambda s, d: _scribble(s, d, 2000, 6000), "damaged"),
    "scribbled-header": (lambda s, d: _scribble(s, d, -4000, 0), "damaged"),
    "empty-file": (lambda s, d: _write(d, b""), "not an HDF5 file"),
    "text-file": (lambda s, d: _write(d, b"id,label\n1,2\n"), "not an HDF5 file"),
    "foreign-hdf5": (lambda s, d: _edit(s, d, lambda f: f.attrs.__delitem__("schema")), "not an ltkit feature store"),
    "schema-v2": (lambda s, d: _edit(s, d, lambda f: f.attrs.modify("schema_version", SCHEMA_VERSION + 1)),
                  f"schema version {SCHEMA_VERSION + 1}"),
    "unfinished": (lambda s, d: _edit(s, d, lambda f: f.attrs.modify("complete", 0)), "unfinished extraction"),
    "bad-json-attr": (lambda s, d: _edit(s, d, lambda f: f.attrs.modify("options", "{not json")),
                      "damaged root attribute"),
    "external-link": (lambda s, d: _edit(s, d, lambda f: f.__setitem__(
        "train/more", h5py.ExternalLink("/etc/other.h5", "/x"))), "ExternalLink"),
    "soft-link": (lambda s, d: _edit(s, d, lambda f: f.__setitem__("alias", h5py.SoftLink("/train"))),
                  "SoftLink"),
    "virtual-dataset": (lambda s, d: _edit(s, d, _virtual), "virtual dataset reading other files"),
    "external-storage": (lambda s, d: _edit(s, d, _external_storage), "external files"),
    "label-out-of-range": (lambda s, d: _edit(s, d, _set("test/labels", 6)), "outside the classes 0..5"),
    "negative-label": (lambda s, d: _edit(s, d, _set("train/labels", -1)), "outside the classes 0..5"),
    "nan-pooled": (lambda s, d: _edit(s, d, lambda f: [_set(n, np.nan)(f) for n in ("train/pooled", "test/pooled")]),
                   "NaN or infinite"),
    "inf-logits": (lambda s, d: _edit(s, d, _set("train/logits", np.inf)), "NaN or infinite"),
    "nan-classifier": (lambda s, d: _edit(s, d, _set("classifier/weight", np.nan)), "NaN or infinite"),
}
READERS = {  # damaged values are found by the stages that read them (inspect reads no rows)
    "nan-pooled": ("augment-finetune", "evaluate"),
    "inf-logits": ("confusing-classes", "augment-finetune"),
    "nan-classifier": ("inspect", "augment-finetune", "evaluate"),
}
NOT_HDF5 = ("empty-file", "text-file")  # stages that take a store or a torch file try the latter


@pytest.mark.parametrize("kind", BAD_STORES)
def test_every_stage_refuses_a_bad_store(work, tmp_path, kind):
    make, needle = BAD_STORES[kind]
    bad = make(work["store"], tmp_path / "bad.h5")
    before = snapshot(tmp_path)
    stages = {"inspect": [], "confusing-classes": ["--out", str(tmp_path / "t.pt")],
              "augment-finetune": [*ITERS, "--out", str(tmp_path / "c.pt")], "evaluate": []}
    for stage in READERS.get(kind, ALL):
        result = run(stage, str(bad), *stages[stage], "--quiet")
        both = kind in NOT_HDF5 and stage in ("augment-finetune", "evaluate")
        assert_refused(result, "not a readable ltkit artifact" if both else needle,
                       folder=tmp_path, before=before)


def test_nan_in_the_feature_maps_is_refused_before_fine_tuning(work, tmp_path):
    bad = _edit(work["store"], tmp_path / "bad.h5", _set("train/features", np.nan))
    before = snapshot(tmp_path)
    result = run("augment-finetune", str(bad), "--augment", "fsa", *ITERS, "--quiet",
                 "--out", str(tmp_path / "c.pt"))
    assert_refused(result, "feature maps hold NaN", folder=tmp_path, before=before)
    # maps read on demand (a store larger than the device) reach the loss: refused there
    streamed = run("augment-finetune", str(bad), "--augment", "fsa", *ITERS, "--quiet",
                   "--resident-gib", "0", "--out", str(tmp_path / "c.pt"))
    assert_refused(streamed, "feature maps hold NaN", folder=tmp_path, before=before)


# ---- checkpoints, classifiers and tables that are not what they claim ------------------------

def _checkpoint_variant(src: Path, dst: Path, **changes) -> Path:
    ckpt = torch.load(src, weights_only=True)
    ckpt.update(changes)
    torch.save(ckpt, dst)
    return dst


def test_extract_refuses_checkpoints_of_another_kind(work, tmp_path):
    ckpt = work["ckpt"]
    state = torch.load(ckpt, weights_only=True)
    fc_rows = state["model_state"]["fc.weight"].shape[0]
    assert fc_rows == 4
    grey = make_checkpoint(tmp_path / "grey.pt")  # a 1-channel backbone for the RGB data set
    from ltkit.models import create_model

    grey_state = create_model("resnet32", 4, 1).state_dict()
    cases = {
        "arch.pt": (dict(arch="resnet18"), "do not fit a resnet18"),
        "classes.pt": (dict(num_classes=5, class_names=[f"class{i}" for i in range(5)],
                            class_counts=[1] * 5), "do not fit a resnet32 with 5 classes"),
        "names.pt": (dict(class_names=["a", "b"]), "damaged"),
        "unknown.pt": (dict(arch="resnet9000"), "unknown backbone"),
        "no-state.pt": (dict(model_state=None), "missing or malformed: model_state"),
        "version.pt": (dict(format_version=99), "format version 99"),
        "other-data.pt": (dict(class_names=["w", "x", "y", "z"]), "not the 4 classes"),
        "grey.pt": (dict(in_channels=1, model_state=grey_state), "the backbone takes 1"),
    }
    made = {name: _checkpoint_variant(ckpt if name != "grey.pt" else grey, tmp_path / name, **change)
            for name, (change, _) in cases.items()}
    (tmp_path / "cut.pt").write_bytes(ckpt.read_bytes()[:5000])
    (tmp_path / "noise.pt").write_bytes(np.random.default_rng(0).bytes(5000))
    store = tmp_path / "store.h5"  # a store given where a checkpoint is expected
    shutil.copy(work["store"], store)
    before = snapshot(tmp_path)
    for name, (_, needle) in cases.items():
        assert_refused(run("extract", str(made[name]), "--out", str(tmp_path / "s.h5"), "--quiet",
                           "--device", "cpu"), needle, folder=tmp_path, before=before)
    for name in ("cut.pt", "noise.pt", "store.h5"):
        assert_refused(run("extract", str(tmp_path / name), "--out", str(tmp_path / "s.h5"),
                           "--quiet"), "not a readable ltkit artifact", folder=tmp_path, before=before)


def _classifier(path: Path, store: Path, clf: Classifier) -> Path:
    return save_classifier(path, clf, method="test", lineage=make_lineage({"store": store}, {}, 0),
                           options={})


def test_evaluate_refuses_a_classifier_that_does_not_fit_its_store(work, tmp_path):
    store = work["store"]
    cases = {  # store: 6 classes, 8 features
        "features.pt": (Classifier("linear", torch.zeros(6, 5), torch.zeros(6)), "maps 5 features"),
        "classes.pt": (Classifier("linear", torch.zeros(4, 8), torch.zeros(4)), "to 4 classes"),
        "nan.pt": (Classifier("linear", torch.full((6, 8), float("nan")), torch.zeros(6)), "NaN or infinite"),
    }
    for name, (clf, _) in cases.items():
        _classifier(tmp_path / name, store, clf)
    torch.save({"format": "ltkit-classifier", "format_version": 1, "classifier": {"kind": "magic"}},
               tmp_path / "kind.pt")
    before = snapshot(tmp_path)
    for name, (_, needle) in cases.items():
        assert_refused(run("evaluate", str(tmp_path / name), "--quiet"), needle,
                       folder=tmp_path, before=before)
    assert_refused(run("evaluate", str(tmp_path / "kind.pt"), "--quiet"), "damaged classifier",
                   folder=tmp_path, before=before)
    other = make_store(tmp_path / "other" / "s.h5", num_classes=5)  # --store of another shape
    assert_refused(run("evaluate", str(work["clf"]), "--store", str(other), "--quiet"),
                   "has 8 features and 5 classes")


def test_a_table_for_another_store_is_refused(work, tmp_path):
    table = work["table"]
    five = make_store(tmp_path / "five.h5", num_classes=5)
    recount = make_store(tmp_path / "recount.h5", counts=(100, 50, 25, 12, 6, 3))
    beside = tmp_path / "beside.h5"  # a store with somebody else's table at its default path
    shutil.copy(work["store"], beside)
    shutil.copy(build_table(five, ConfusingConfig(head_ratio=0.8)), tmp_path / "beside.table.pt")
    damaged = torch.load(table, weights_only=True)
    damaged["confusing"][0, 0] = 17  # a class index past K
    torch.save(damaged, tmp_path / "damaged.table.pt")
    before = snapshot(tmp_path)
    for args, needle in [
        (["augment-finetune", str(table), "--store", str(five)], "table's classes differ"),
        (["augment-finetune", str(table), "--store", str(recount)], "other training counts"),
        (["augment-finetune", str(beside)], "table of another store"),
        (["augment-finetune", str(tmp_path / "damaged.table.pt"), "--store", str(work["store"])],
         "damaged confusing-class table"),
        (["evaluate", str(work["clf"]), "--table", str(tmp_path / "five.table.pt")], "is for 5 classes"),
    ]:
        out = [] if args[0] == "evaluate" else [*ITERS, "--out", str(tmp_path / "c.pt")]
        assert_refused(run(*args, *out, "--quiet"), needle, folder=tmp_path, before=before)


# ---- data problems ---------------------------------------------------------------------------

def test_data_problems_are_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    folder = write_imagefolder(tmp_path / "folder", [6, 4, 3], test_per_class=2, size=8)
    hollow = write_imagefolder(tmp_path / "hollow", [6, 4, 3], test_per_class=2, size=8)
    (hollow / "train" / "c3").mkdir()  # a class folder without one image
    (hollow / "test" / "c3").mkdir()
    lists = write_list_files(tmp_path / "lists", [5, 3], test_per_class=1, size=8)
    (tmp_path / "neg.txt").write_text("images/c0/train_000.png -1\n")
    with open(lists["test"], "a") as fh:
        fh.write("images/c1/test_000.png 7\n")  # a test label past the train list's classes
    folder_args = ["--data", "imagefolder", "--imbalance", "1", "--val-per-class", "0",
                   "--image-size", "8", "--arch", "resnet32", "--epochs", "1", "--device", "cpu"]
    before = snapshot(tmp_path)
    out = ["--out", str(tmp_path / "b.pt"), "--quiet"]
    for args, needle in [
        (["--data", "imagefolder", "--root", str(empty)], "is empty"),
        (["--data", "imagefolder", "--root", str(tmp_path / "nowhere")], "does not exist"),
        ([*folder_args, "--root", str(hollow)], "c3"),
        ([*folder_args, "--root", str(tmp_path / "lists"), "--train-list", str(tmp_path / "neg.txt"),
          "--test-list", str(lists["test"])], "neg.txt:1"),
        ([*folder_args, "--root", str(tmp_path / "lists"), "--train-list", str(lists["train"]),
          "--test-list", str(lists["test"])], "label 7"),
        ([*TINY_TRAIN, "--val-per-class", "40"], "leaves none to train on"),  # below what val needs
        ([*TINY_TRAIN, "--counts", "30,20,10,50"], "asks for 50 images"),
        ([*TINY_TRAIN, "--counts", "30,20,10,0"], "positive integers"),
    ]:
        assert_refused(run("train-backbone", *args, *out), needle, folder=tmp_path, before=before)
    assert (folder / "train" / "c0").is_dir()


@pytest.mark.parametrize("workers", ["0", "2"])
def test_an_unreadable_image_is_one_line_naming_it(tmp_path, workers):
    root = write_imagefolder(tmp_path / "data", [6, 4, 3], test_per_class=2, size=8)
    broken = root / "train" / "c1" / "001.png"
    broken.write_bytes(b"not a png at all")
    before = snapshot(tmp_path)
    result = run("train-backbone", "--data", "imagefolder", "--root", str(root), "--imbalance", "1",
                 "--val-per-class", "0", "--image-size", "8", "--arch", "resnet32", "--epochs", "1",
                 "--batch-size", "8", "--device", "cpu", "--workers", workers,
                 "--out", str(tmp_path / "b.pt"), "--quiet")
    # from a DataLoader worker the error comes back wrapped in its traceback: still one line
    assert_refused(result, f"cannot read image {broken}", folder=tmp_path, before=before)
    assert not (tmp_path / "b.pt").exists() and not (tmp_path / "b.pt.partial").exists()


def test_store_level_class_problems(tmp_path):
    with np.errstate(divide="ignore"):  # the fixture's log-prior of an empty class
        hollow = make_store(tmp_path / "hollow.h5", counts=(120, 60, 25, 12, 5, 0))  # class5: no image
    before = snapshot(tmp_path)
    assert_refused(run("confusing-classes", str(hollow), "--quiet"), "'class5' has no training image",
                   folder=tmp_path, before=before)
    store = make_store(tmp_path / "s.h5", counts=(120, 60, 25, 12, 5, 2))
    before = snapshot(tmp_path)
    assert_refused(run("confusing-classes", str(store), "--top", "6", "--quiet"),
                   "--top 6 asks for more confusing classes", folder=tmp_path, before=before)


# ---- option problems ---------------------------------------------------------------------------

@pytest.mark.parametrize("args, needle", [
    # thresholds outside (0, 1)
    (["confusing-classes", "{store}", "--head-ratio", "1.5"], "--head-ratio must lie strictly between 0 and 1"),
    (["confusing-classes", "{store}", "--head-ratio", "0"], "--head-ratio must lie strictly between 0 and 1"),
    (["augment-finetune", "{table}", "--tau-g", "0"], "--tau-g must lie strictly between 0 and 1"),
    (["augment-finetune", "{table}", "--tau-s", "nan"], "--tau-s must lie strictly between 0 and 1"),
    (["evaluate", "{store}", "--many-threshold", "10", "--few-threshold", "20"], "threshold"),
    # a head ratio that leaves no tail
    (["confusing-classes", "{store}", "--head-ratio", "0.999"], "every class in the head"),
    # batch size too small (or not a multiple) for 2 * Nt * (1 + Na)
    (["augment-finetune", "{table}", "--batch-size", "4"], "does not fit a balanced batch"),
    (["augment-finetune", "{table}", "--batch-size", "8", "--na", "7", "--augment", "cloud"], "e.g. 16"),
    # zero or negative counts
    (["augment-finetune", "{table}", "--iterations", "0"], "--iterations must be at least 1"),
    (["augment-finetune", "{table}", "--na", "-1"], "--na must be at least 1"),
    (["confusing-classes", "{store}", "--top", "0"], "--top must be at least 1"),
    (["train-backbone", *TINY_TRAIN, "--epochs", "0"], "--epochs must be at least 1"),
    (["train-backbone", *TINY_TRAIN, "--imbalance", "0.5"], "imbalance"),
    # conflicting options
    (["extract", "{ckpt}", "--no-spatial", "--spatial-splits", "train"], "not both"),
    (["augment-finetune", "{table}", "--classifier", "ncm", "--augment", "fsa"], "needs no training batches"),
    (["augment-finetune", "{table}", "--augment", "cloud", "--classifier", "lws"], "cosine classifier"),
    (["augment-finetune", "{store}", "--store", "{store}"], "already a store"),
    (["evaluate", "{store}", "--store", "{store}"], "already a store"),
])
def test_option_problems_are_one_clear_line(work, tmp_path, args, needle):
    args = [a.format(**{k: str(v) for k, v in work.items()}) for a in args]
    if args[0] in ("augment-finetune", "confusing-classes", "extract", "train-backbone"):
        args += ["--out", str(tmp_path / "out")]
    before = snapshot(work["root"])
    result = run(*args, "--quiet")
    assert result.exit_code == 2, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert snapshot(work["root"]) == before and not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, needle", [
    (["extract", "{ckpt}", "--batch-size", "0"], "Invalid value for '--batch-size'"),
    (["extract", "{ckpt}", "--train-views", "-2"], "Invalid value for '--train-views'"),
    (["confusing-classes", "{store}", "--top", "three"], "Invalid value for '--top'"),
])
def test_values_the_option_parser_rejects(work, tmp_path, args, needle):
    """Ranges declared on the option and values of the wrong type: the parser's own message
    (a usage line and one Error: line), exit 2, nothing written."""
    args = [a.format(**{k: str(v) for k, v in work.items()}) for a in args]
    before = snapshot(work["root"])
    result = run(*args, "--out", str(tmp_path / "out"), "--quiet")
    assert result.exit_code == 2 and needle in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: ") and result.stdout == ""
    assert snapshot(work["root"]) == before and not (tmp_path / "out").exists()


def test_debug_shows_the_traceback(work, tmp_path):
    plain = run("confusing-classes", str(work["store"]), "--head-ratio", "2", "--quiet")
    debug = run("confusing-classes", str(work["store"]), "--head-ratio", "2", "--quiet", "--debug")
    assert plain.exit_code == debug.exit_code == 2
    assert "Traceback" not in plain.stderr and "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()


# ---- untrusted files: pickles that run code ----------------------------------------------------

class _RunsCode:
    """Unpickling this runs a shell command: what a hostile 'checkpoint' would do."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _hostile(path: Path, marker: Path, fmt: str, raw_pickle: bool = False) -> Path:
    obj = {"format": fmt, "format_version": 1, "payload": _RunsCode(f"touch {shlex.quote(str(marker))}")}
    if raw_pickle:  # torch's legacy (non-zip) format: a bare pickle stream
        with open(path, "wb") as fh:
            pickle.dump(obj, fh, protocol=2)
    else:
        torch.save(obj, path)
    return path


def test_pickles_that_would_run_code_are_refused_and_never_run(work, tmp_path):
    marker = tmp_path / "code-ran"
    probe = _hostile(tmp_path / "probe.pt", marker, "ltkit-backbone")
    torch.load(probe, weights_only=False)  # the payload is live: an unsafe load runs it
    assert marker.exists()
    marker.unlink()

    ckpt = _hostile(tmp_path / "backbone.pt", marker, "ltkit-backbone")
    legacy = _hostile(tmp_path / "legacy.pt", marker, "ltkit-backbone", raw_pickle=True)
    table = _hostile(tmp_path / "table.pt", marker, "ltkit-confusing-table")
    clf = _hostile(tmp_path / "clf.pt", marker, "ltkit-classifier")
    beside = tmp_path / "features.h5"  # a store whose default table is hostile
    shutil.copy(work["store"], beside)
    _hostile(tmp_path / "features.table.pt", marker, "ltkit-confusing-table")
    _hostile(tmp_path / "b.pt.partial", marker, "ltkit-backbone")  # a hostile resume state
    before = snapshot(tmp_path)
    for args in (["extract", str(ckpt), "--out", str(tmp_path / "s.h5")],
                 ["extract", str(legacy), "--out", str(tmp_path / "s.h5")],
                 ["augment-finetune", str(table), "--store", str(work["store"]), *ITERS,
                  "--out", str(tmp_path / "c.pt")],
                 ["augment-finetune", str(beside), *ITERS, "--out", str(tmp_path / "c.pt")],
                 ["evaluate", str(clf)],
                 ["evaluate", str(work["clf"]), "--table", str(table)],
                 ["train-backbone", *TINY_TRAIN, "--out", str(tmp_path / "b.pt")]):
        result = run(*args, "--quiet")
        assert_refused(result, "would run code when loaded (posix.system)", folder=tmp_path, before=before)
        assert not marker.exists(), args[0]


# ---- class names from a store never reach file paths --------------------------------------------

HOSTILE_NAMES = ["../../escaped", "a/b", "/etc/passwd", "..", "$x_{", "tab\tand\nnewline"]
# (indices 3-5 are the few classes, which evaluate --group few lists by name; "$x_{" is mathtext)


def test_class_names_never_become_paths(tmp_path):
    work = tmp_path / "deep" / "er"
    store = make_store(work / "s.h5")
    with h5py.File(store, "r+") as f:
        f.attrs["class_names"] = np.array(HOSTILE_NAMES, dtype=h5py.string_dtype())
    runs = [["inspect", str(store)],
            ["confusing-classes", str(store), "--csv", str(work / "table.csv")],
            ["augment-finetune", str(store), *ITERS],
            ["evaluate", str(work / "s.fsa.pt"), "--report", str(work / "report"), "--group", "few"],
            ["plot-features", str(store), "--per-class", "4", "--vectors", "8"]]
    for args in runs:
        result = run(*args)
        assert result.exit_code == 0, (args[0], result.stderr[-500:], result.exception)
    made = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    report = ["confusion.csv", "confusion_matrix.png", "metrics.json", "per_class.csv",
              "per_class_accuracy.png", "reliability.png", "summary.md", ".ltkit-report"]
    assert made == sorted([f"deep/er/{n}" for n in ("s.h5", "s.backbone.pt", "s.table.pt", "table.csv",
                                                     "s.fsa.pt", "s.fsa.metrics.csv", "s.features.png")]
                          + [f"deep/er/report/{n}" for n in report])
    assert "../../escaped" in (work / "table.csv").read_text()


def test_paths_and_names_are_printed_as_text_not_markup(work, tmp_path):
    folder = tmp_path / "runs["  # with the file "]s.h5": the path holds rich's closing tag "[/]"
    folder.mkdir()
    store = folder / "]s.h5"
    shutil.copy(work["store"], store)
    with h5py.File(store, "r+") as f:
        f.attrs["class_names"] = np.array(["[/]", "[/bold]", "[red]", "a", "b", "c"], dtype=h5py.string_dtype())
    shown = run("inspect", str(store))
    assert shown.exit_code == 0, shown.exception
    assert "[/bold]" in shown.stderr and str(store) in shown.stderr
    table = run("confusing-classes", str(store), "--out", str(tmp_path / "t.pt"))
    assert table.exit_code == 0, table.exception
    assert "[/]" in table.stderr and "[red]" in table.stderr
    before = snapshot(tmp_path)
    assert_refused(run("confusing-classes", str(store), "--head-ratio", "7", "--out",
                       str(folder / "[/x]")), "--head-ratio", folder=tmp_path, before=before)
    missing = folder / "]gone.h5"
    assert_refused(run("evaluate", str(missing)), f"{missing} does not exist")


def test_logged_paths_are_printed_as_text_not_markup(work, tmp_path):
    folder = tmp_path / "runs["
    folder.mkdir()
    store = folder / "]s.h5"
    shutil.copy(work["store"], store)
    for args in (["augment-finetune", str(store), *ITERS],  # logs the table path it builds
                 ["extract", str(work["ckpt"]), "--out", str(folder / "]e.h5"), "--device", "cpu"]):
        result = run(*args)
        assert result.exit_code == 0, (args[0], result.exception)


def test_evaluate_lists_class_names_as_text_not_markup(tmp_path):
    store = make_store(tmp_path / "s.h5")
    with h5py.File(store, "r+") as f:  # classes 3-5 are the few classes
        f.attrs["class_names"] = np.array(["a", "b", "c", "[/]", "[/bold]", "[red]x"], dtype=h5py.string_dtype())
    result = run("evaluate", str(store), "--group", "few")
    assert result.exit_code == 0, result.exception
    assert "[/bold]" in result.stderr


@pytest.mark.parametrize("stage", ["extract", "confusing-classes", "augment-finetune", "evaluate",
                                   "compare", "inspect"])
def test_a_folder_given_as_an_artifact_is_refused_in_one_line(stage, tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    assert_refused(run(stage, str(folder)), f"{folder} is a folder")


def test_file_hashes_are_remembered_only_for_settled_unchanged_files(tmp_path, monkeypatch):
    import time

    import ltkit.artifacts as artifacts

    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 1000)
    remembered = lambda: any(k[1] == path.stat().st_ino for k in artifacts._SHA256_CACHE)  # noqa: E731
    first = artifacts.file_sha256(path)
    assert not remembered()  # just written: timestamps too close to trust
    now = time.time_ns()
    monkeypatch.setattr(artifacts.time, "time_ns", lambda: now + 10**10)  # ten seconds on
    assert artifacts.file_sha256(path) == first and remembered()
    time.sleep(0.05)  # past a file-system timestamp tick
    with open(path, "r+b") as fh:  # same size, new content, in place: the change time moves
        fh.write(b"z")
    assert artifacts.file_sha256(path) != first
