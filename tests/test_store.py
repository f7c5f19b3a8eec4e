"""The feature store: format invariants, reader API, validation, crash-safe writing, CAMs."""

from __future__ import annotations

import json
import pickle
import shutil

import h5py  # tests build foreign and damaged files with plain h5py, as a user would
import numpy as np
import pytest
import torch

from ltkit.cams import CONSTANT_RTOL, label_cams, normalize_cams, raw_cams
from ltkit.errors import StoreError
from ltkit.store import SCHEMA_VERSION, VIEWS, StoreLayout, StoreWriter, create_store, open_store, pack_store
from storefixtures import DEFAULT_COUNTS, make_store


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("store") / "features.h5", views=2, spatial_test=True)


def test_fixture_store_holds_every_invariant(store_path):
    with open_store(store_path) as st:
        assert st.splits == ["train", "val", "test"] and st.views == 2
        assert st.class_names == [f"class{k}" for k in range(6)]
        assert st.train_counts.tolist() == list(DEFAULT_COUNTS)
        labels = st.read("train", "labels")
        assert labels.dtype == np.int64 and np.bincount(labels).tolist() == list(DEFAULT_COUNTS)
        features = st.read("train", "features")
        assert features.dtype == np.float16 and features.shape == (sum(DEFAULT_COUNTS), 8, 4, 4)
        pooled = st.read("train", "pooled")
        np.testing.assert_allclose(features.astype(np.float32).mean((2, 3)), pooled, atol=2e-3, rtol=2e-3)
        head = st.classifier()
        np.testing.assert_allclose(st.read("train", "logits"), pooled @ head["weight"].T + head["bias"],
                                   rtol=1e-5, atol=1e-5)
        cams = label_cams(torch.from_numpy(features.astype(np.float32)), torch.from_numpy(head["weight"]),
                          torch.from_numpy(labels)).numpy()
        np.testing.assert_allclose(st.read("train", "cams").astype(np.float32), cams, atol=1e-3)
        assert st.has("test", "features") and not st.has("val", "features")
        assert st.shape(VIEWS, "features") == (2 * len(labels), 8, 4, 4)
        np.testing.assert_array_equal(st.read(VIEWS, "labels"), np.tile(labels, 2))
        assert st.attrs["lineage"]["parents"]["backbone"]["sha256"] == st.attrs["backbone_sha256"]
        assert st.attrs["dataset"]["name"] == "synthetic" and st.attrs["complete"] == 1


def test_cosine_head_logits(tmp_path):
    with open_store(make_store(tmp_path / "cos.h5", head="cosine", val_per_class=0)) as st:
        head = st.classifier()
        assert head["kind"] == "cosine" and head["bias"] is None and head["scale"] == 16.0
        pooled = st.read("test", "pooled")
        unit = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        wunit = head["weight"] / np.linalg.norm(head["weight"], axis=1, keepdims=True)
        np.testing.assert_allclose(st.read("test", "logits"), 16.0 * unit @ wunit.T, rtol=1e-5, atol=1e-5)
        assert st.splits == ["train", "test"]


@pytest.mark.parametrize("index", [[5, 1, 5, -1, 0], [3, 2, 1], list(range(200, 10, -7)),
                                   np.array([], dtype=np.int64), slice(10, 50, 3)])
def test_read_any_order_matches_numpy(store_path, index):
    with open_store(store_path) as st:
        full = st.read("train", "features")
        np.testing.assert_array_equal(st.read("train", "features", index), full[index])
        np.testing.assert_array_equal(st.read("train", "pooled", index), st.read("train", "pooled")[index])


def test_direct_map_reads_equal_hdf5_reads(store_path):
    """Maps with one unfiltered chunk per sample are read from the file's bytes: same values."""
    index = np.array([200, 3, 4, 5, 150, 3, 0])
    with open_store(store_path) as st, h5py.File(store_path, "r") as f:
        for split in ("train", VIEWS):
            expected = f[f"{split}/features"][()]
            np.testing.assert_array_equal(st.read(split, "features"), expected)
            np.testing.assert_array_equal(st.read(split, "features", index), expected[index])
        assert st._offsets["/train/features"] is not None  # the direct path was taken


@pytest.mark.parametrize("compression", [None, "lzf"])  # the direct path, and HDF5's
def test_channels_last_reads_are_transposed_maps(store_path, tmp_path, compression):
    if compression:
        pack_store(store_path, tmp_path / "packed.h5", compression)
        store_path = tmp_path / "packed.h5"
    index = np.array([200, 3, 4, 5, 150, 3, 0])
    with open_store(store_path) as st:
        maps = st.read("train", "features")  # (N, C, H, W)
        last = np.moveaxis(maps, 1, -1)  # (N, H, W, C)
        np.testing.assert_array_equal(st.read("train", "features", channels_last=True), last)
        np.testing.assert_array_equal(st.read("train", "features", index, channels_last=True), last[index])
        blocks = [b for _, b in st.iter_chunks("train", "features", rows=64, channels_last=True)]
        np.testing.assert_array_equal(np.concatenate(blocks), last)
        assert (st._offsets["/train/features"] is None) == bool(compression)
        with pytest.raises(StoreError, match="not \\(N, C, H, W\\) maps"):
            st.read("train", "pooled", channels_last=True)


def test_read_bool_mask_and_bad_index(store_path):
    with open_store(store_path) as st:
        labels = st.read("train", "labels")
        np.testing.assert_array_equal(st.read("train", "labels", labels == 3), labels[labels == 3])
        with pytest.raises(IndexError):
            st.read("train", "labels", [len(labels)])
        with pytest.raises(StoreError, match="no /val/features"):
            st.read("val", "features")


def test_iter_chunks_bounded_and_complete(store_path):
    with open_store(store_path) as st:
        blocks = list(st.iter_chunks("train", "features", rows=50))
        assert [start for start, _ in blocks] == [0, 50, 100, 150, 200]
        assert max(len(b) for _, b in blocks) == 50
        np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), st.read("train", "features"))
        part = list(st.iter_chunks("train", "pooled", rows=7, start=3, stop=20))
        np.testing.assert_array_equal(np.concatenate([b for _, b in part]), st.read("train", "pooled")[3:20])


def _read_first_rows(args):
    st, pid = args
    import os
    return os.getpid() != pid, st.read("train", "pooled", [0, 1])


def test_reader_reopens_after_fork_and_pickle(store_path):
    import multiprocessing as mp
    import os

    st = open_store(store_path)
    expected = st.read("train", "pooled", [0, 1])  # the parent's handle is open now
    clone = pickle.loads(pickle.dumps(st))
    np.testing.assert_array_equal(clone.read("train", "pooled", [0, 1]), expected)
    with mp.get_context("fork").Pool(1) as pool:
        other, rows = pool.apply(_read_first_rows, ((st, os.getpid()),))
    assert other and np.array_equal(rows, expected)
    np.testing.assert_array_equal(st.read("train", "pooled", [0, 1]), expected)  # parent unaffected
    st.close(), clone.close()


@pytest.mark.parametrize("compression", ["lzf", "gzip"])
def test_pack_store_is_identical_and_compressed(store_path, tmp_path, compression):
    packed = tmp_path / f"{compression}.h5"
    pack_store(store_path, packed, compression)
    with open_store(store_path) as a, open_store(packed) as b:
        assert a.attrs == b.attrs
        for split in (*a.splits, VIEWS):
            for name in a.names(split):
                np.testing.assert_array_equal(a.read(split, name), b.read(split, name))
    with h5py.File(packed, "r") as f:
        assert f["train/features"].compression == compression
        assert f["train/features"].chunks == (1, 8, 4, 4)  # one sample's map per chunk


def test_errors_are_one_line_store_errors(tmp_path, store_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    cases = {tmp_path / "missing.h5": "does not exist", text: "not an HDF5 file",
             foreign: "not an ltkit feature store"}
    for path, message in cases.items():
        with pytest.raises(StoreError, match=message) as info:
            open_store(path)
        assert "\n" not in str(info.value)


def _damaged(store_path, tmp_path, name, edit):
    path = tmp_path / name
    shutil.copy(store_path, path)
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def test_other_version_missing_dataset_incomplete(store_path, tmp_path):
    other = _damaged(store_path, tmp_path, "v2.h5", lambda f: f.attrs.modify("schema_version", SCHEMA_VERSION + 1))
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}"):
        open_store(other)
    gone = _damaged(store_path, tmp_path, "gone.h5", lambda f: f["train"].__delitem__("cams"))
    with pytest.raises(StoreError, match="no dataset /train/cams"):
        open_store(gone)
    short = _damaged(store_path, tmp_path, "short.h5", lambda f: f["test"].__delitem__("logits"))
    with pytest.raises(StoreError, match="truncated"):
        open_store(short)
    unfinished = _damaged(store_path, tmp_path, "unfinished.h5", lambda f: f.attrs.modify("complete", 0))
    with pytest.raises(StoreError, match="unfinished extraction"):
        open_store(unfinished)
    open_store(unfinished, allow_incomplete=True).close()


def test_truncated_file(store_path, tmp_path):
    path = tmp_path / "cut.h5"
    data = store_path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match="truncated or damaged"):
        open_store(path)


def test_links_and_outside_data_refused(store_path, tmp_path):
    ext = _damaged(store_path, tmp_path, "ext.h5",
                   lambda f: f.__setitem__("extra", h5py.ExternalLink("/etc/elsewhere.h5", "/x")))
    with pytest.raises(StoreError, match="ExternalLink"):
        open_store(ext)
    soft = _damaged(store_path, tmp_path, "soft.h5", lambda f: f.__setitem__("alias", h5py.SoftLink("/train")))
    with pytest.raises(StoreError, match="SoftLink"):
        open_store(soft)
    source = tmp_path / "source.h5"
    with h5py.File(source, "w") as f:
        f["data"] = np.zeros((4,), np.float32)

    def add_virtual(f):
        layout = h5py.VirtualLayout(shape=(4,), dtype=np.float32)
        layout[:] = h5py.VirtualSource(str(source), "data", shape=(4,))
        f.create_virtual_dataset("train/outside", layout)

    virtual = _damaged(store_path, tmp_path, "virtual.h5", add_virtual)
    with pytest.raises(StoreError, match="virtual dataset"):
        open_store(virtual)


@pytest.mark.parametrize("damage", ["soft-link", "bad-json-attr"])
def test_a_refused_store_leaves_h5py_usable_from_other_threads(store_path, tmp_path, damage):
    """A store refused while h5py iterates its groups or attributes must not leave h5py's
    global lock held by the traceback it raised: extract's writer thread would wait forever."""
    import threading

    edit = {"soft-link": lambda f: f.__setitem__("alias", h5py.SoftLink("/train")),
            "bad-json-attr": lambda f: f.attrs.modify("options", "{not json")}[damage]
    bad = _damaged(store_path, tmp_path, f"{damage}.h5", edit)
    with pytest.raises(StoreError) as refused:
        open_store(bad)
    kept = refused.value  # its traceback stays alive, as a CLI runner's result keeps it
    rows = []
    reader = threading.Thread(target=lambda: rows.append(open_store(store_path).rows("train")), daemon=True)
    reader.start()
    reader.join(timeout=30)
    assert rows, "an h5py call from another thread blocked on a lock the refused store left held"
    assert kept.__traceback__ is not None


def test_row_writes_never_touch_metadata(tmp_path):
    """Crash safety: after create_store, filling rows changes only the datasets' raw bytes,
    so a process killed mid-write leaves HDF5 metadata intact and the file opens."""
    layout = StoreLayout(4, 2, 2, 3, {"train": 10, "test": 4}, ("train",))
    attrs = {"class_names": ["a", "b", "c"], "train_counts": [5, 3, 2], "num_classes": 3,
             "feature_shape": [4, 2, 2], "arch": "x", "layer": "forward_features", "head": "linear",
             "dataset": {"name": "synthetic"}, "backbone_path": "b.pt", "backbone_sha256": "0" * 64,
             "ltkit_version": "0", "options": {}, "seed": 0, "lineage": {}, "train_views": 0,
             "spatial_splits": ["train"]}
    path = tmp_path / "s.h5"
    head = {"kind": "linear", "weight": np.ones((3, 4)), "bias": np.zeros(3)}
    columns = {"train": {"labels": np.array([0] * 5 + [1] * 3 + [2] * 2)}, "test": {"labels": np.arange(4) % 3}}
    create_store(path, layout, attrs=attrs, classifier=head, columns=columns)
    before = np.frombuffer(path.read_bytes(), np.uint8)
    rng = np.random.default_rng(0)
    with StoreWriter(path) as writer:
        for start in (0, 4, 8):
            n = min(4, 10 - start)
            writer.write("train", start, features=rng.random((n, 4, 2, 2)), cams=rng.random((n, 2, 2)),
                         pooled=rng.random((n, 4)), logits=rng.random((n, 3)))
            writer.flush()
        writer.write("test", 0, pooled=rng.random((4, 4)), logits=rng.random((4, 3)))
        with pytest.raises(ValueError):
            writer.write("test", 2, pooled=rng.random((4, 4)))  # rows 2..6 of 4
    after = np.frombuffer(path.read_bytes(), np.uint8)
    assert len(after) == len(before)
    raw = np.zeros(len(after), bool)
    with h5py.File(path, "r") as f:
        for name in ("train/features", "train/cams", "train/pooled", "train/logits", "test/pooled", "test/logits"):
            ds = f[name]
            for i in range(ds.id.get_num_chunks()):
                info = ds.id.get_chunk_info(i)
                raw[info.byte_offset:info.byte_offset + info.size] = True
    changed = np.flatnonzero(before != after)
    assert changed.size > 0 and raw[changed].all()
    with open_store(path, allow_incomplete=True) as st:
        assert st.read("train", "pooled").shape == (10, 4)


def test_cams_normalised_per_sample_and_constant_maps_zero():
    fmap = torch.rand(3, 5, 4, 4)
    weight = torch.randn(2, 5)
    labels = torch.tensor([0, 1, 1])
    raw = raw_cams(fmap, weight, labels)
    np.testing.assert_allclose(raw[1].numpy(), np.einsum("c,chw->hw", weight[1].numpy(), fmap[1].numpy()), rtol=1e-5)
    cams = label_cams(fmap, weight, labels)
    assert torch.allclose(cams.flatten(1).min(1).values, torch.zeros(3))
    assert torch.allclose(cams.flatten(1).max(1).values, torch.ones(3))
    flat = torch.full((2, 3, 3), 7.0)
    flat[1, 0, 0] += 7.0 * CONSTANT_RTOL * 0.5  # below the tolerance: still constant
    assert torch.equal(normalize_cams(flat), torch.zeros(2, 3, 3))
    assert torch.equal(normalize_cams(torch.zeros(1, 2, 2)), torch.zeros(1, 2, 2))
    edge = torch.full((1, 2, 2), 7.0)
    edge[0, 0, 0] += 7.0 * CONSTANT_RTOL * 4  # above it: a real, if faint, contrast
    assert normalize_cams(edge)[0, 0, 0] == 1.0 and normalize_cams(edge)[0, 1, 1] == 0.0


def test_inspect_summary_and_json(store_path):
    from typer.testing import CliRunner

    from ltkit.cli import app

    result = CliRunner().invoke(app, ["inspect", str(store_path)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""  # the summary is for humans: stderr
    assert "many 1, medium 2, few 3" in result.stderr and "train/views" in result.stderr
    assert "224x8x4x4" in result.stderr and "float16" in result.stderr
    result = CliRunner().invoke(app, ["inspect", str(store_path), "--json", "--quiet"])
    assert result.exit_code == 0 and result.stderr == ""
    info = json.loads(result.stdout)
    assert info["splits"]["train"]["arrays"]["features"] == {"shape": [224, 8, 4, 4], "dtype": "float16"}
    assert info["groups"] == {"many": 1, "medium": 2, "few": 3}
    assert [c["group"] for c in info["classes"]] == ["many", "medium", "medium", "few", "few", "few"]
    assert info["size_bytes"] == store_path.stat().st_size and info["train_views"] == 2
    assert len(info["provenance"]["backbone_sha256"]) == 64 and info["provenance"]["arch"] == "fixture"


def test_inspect_refuses_foreign_files(store_path, tmp_path):
    from typer.testing import CliRunner

    from ltkit.cli import app

    text = tmp_path / "x.h5"
    text.write_text("not a store")
    other = _damaged(store_path, tmp_path, "v9.h5", lambda f: f.attrs.modify("schema_version", 9))
    cut = tmp_path / "cut.h5"
    cut.write_bytes(store_path.read_bytes()[:5000])
    for path, message in [(text, "not an HDF5 file"), (other, "schema version 9"), (cut, "truncated")]:
        result = CliRunner().invoke(app, ["inspect", str(path)])
        assert result.exit_code == 2 and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1 and result.stdout == ""
