"""Faults and concurrency across the toolkit (docs/reliability.md): kills and Ctrl-C of real
processes, a full disk (simulated), several processes on one store or one output.

A full disk is simulated two ways, both without root: `file_size_limit` lowers this process's
RLIMIT_FSIZE (with SIGXFSZ ignored, a write past the limit fails with EFBIG, as on a full
disk), and a patched h5py write raises OSError(ENOSPC) in the middle of an extraction.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ltkit.classifiers import load_classifier
from ltkit.cli import app
from ltkit.runlog import read_log
from ltkit.store import open_store
from pausing import DEADLINE_S, interruptible, pause_env, wait_until_paused
from storefixtures import make_store
from test_extract import RESUME_ARGS, assert_same_datasets, make_checkpoint
from test_reliability import ITERS, TINY_TRAIN, assert_refused, snapshot

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))  # one thread, as the in-process runs


def run(*args: str):
    return CliRunner().invoke(app, list(args))


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """Writes past `nbytes` into any file fail with EFBIG (a full disk, without root)."""
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def _done(out: Path) -> int:
    try:
        return sum(json.loads(Path(f"{out}.partial.json").read_text())["done"].values())
    except (OSError, ValueError):
        return 0


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("faults") / "backbone.pt")


EXTRACT = ["--batch-size", "8", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def reference(ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    result = run("extract", str(ckpt), "--out", str(out), *EXTRACT)
    assert result.exit_code == 0, result.stderr
    return out


# ---- disk full ---------------------------------------------------------------------------------

def test_disk_full_while_creating_a_store(ckpt, reference, tmp_path, monkeypatch):
    import shutil as shutil_mod

    out = tmp_path / "s.h5"
    shutil.copy(reference, out)  # an earlier store, replaced only with --force and only when done
    before = snapshot(tmp_path)
    with file_size_limit(reference.stat().st_size // 3):
        result = run("extract", str(ckpt), "--out", str(out), *EXTRACT, "--force")
    assert_refused(result, f"could not write {out}.partial: the store needs about", folder=tmp_path,
                   before=before)
    assert "(ulimit -f)" in result.stderr
    real = shutil_mod.disk_usage
    monkeypatch.setattr(shutil_mod, "disk_usage", lambda p: real(p)._replace(free=50_000))
    full = run("extract", str(ckpt), "--out", str(out), *EXTRACT, "--force")
    assert_refused(full, "has 0.05 MiB free; free space", folder=tmp_path, before=before)
    monkeypatch.undo()
    assert not Path(f"{out}.partial").exists() and not Path(f"{out}.partial.json").exists()
    again = run("extract", str(ckpt), "--out", str(out), *EXTRACT, "--force")
    assert again.exit_code == 0, again.stderr
    assert_same_datasets(out, reference)


def test_disk_full_in_the_middle_of_an_extraction_resumes(ckpt, reference, tmp_path, monkeypatch):
    out = tmp_path / "s.h5"
    real, calls = h5py.Dataset.write_direct, []

    def full_disk(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 9:  # in the third batch's rows (4 arrays per batch of /train)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Dataset, "write_direct", full_disk)
    result = run("extract", str(ckpt), "--out", str(out), *EXTRACT)
    assert_refused(result, "no space left on the device")
    assert Path(f"{out}.partial").exists() and _done(out) == 16 and not out.exists()
    monkeypatch.undo()
    resumed = run("extract", str(ckpt), "--out", str(out), "--batch-size", "8", "--device", "cpu")
    assert resumed.exit_code == 0, resumed.stderr
    assert "resuming" in resumed.stderr and "16 of 66 rows" in resumed.stderr
    assert_same_datasets(out, reference)


def test_disk_full_while_compressing_keeps_the_finished_partial(ckpt, reference, tmp_path, monkeypatch):
    import ltkit.extract as extract_mod
    from ltkit.errors import StoreError

    out = tmp_path / "s.h5"
    real = extract_mod.pack_store

    def full_disk(src, dst, compression):
        Path(dst).write_bytes(b"half a packed store")
        raise StoreError(f"could not write {dst}: no space left on the device; free space")

    monkeypatch.setattr(extract_mod, "pack_store", full_disk)
    result = run("extract", str(ckpt), "--out", str(out), *EXTRACT, "--compression", "lzf")
    assert_refused(result, "no space left on the device")
    assert not out.exists() and not Path(f"{out}.pack.partial").exists()
    assert Path(f"{out}.partial").exists()  # finished, kept: the rerun only compresses
    monkeypatch.setattr(extract_mod, "pack_store", real)
    again = run("extract", str(ckpt), "--out", str(out), *EXTRACT, "--compression", "lzf")
    assert again.exit_code == 0, again.stderr
    assert_same_datasets(out, reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]


def test_disk_full_while_writing_a_checkpoint(tmp_path):
    out = tmp_path / "b.pt"
    torch.save({"format": "ltkit-backbone"}, out)  # an earlier checkpoint: replaced only with --force, when done
    before = snapshot(tmp_path)
    with file_size_limit(200_000):  # a resnet32 checkpoint takes ~2 MB
        result = run("train-backbone", *TINY_TRAIN, "--epochs", "2", "--out", str(out), "--force", "--quiet")
    assert_refused(result, f"could not write {out}.partial", folder=tmp_path, before=before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.metrics.csv", "b.pt"]  # no partial, no .tmp; the log
    assert [row["epoch"] for row in read_log(tmp_path / "b.metrics.csv")] == ["1"]  # keeps the epoch logged


def test_disk_full_while_updating_the_resume_state_keeps_the_last_one(tmp_path, monkeypatch):
    out = tmp_path / "b.pt"
    real, calls = torch.save, []

    def full_disk(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the resume state after epoch 2: half written, then the disk is full
            Path(f).write_bytes(b"PK\x03\x04 half a zip")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    result = run("train-backbone", *TINY_TRAIN, "--epochs", "3", "--out", str(out), "--quiet")
    assert_refused(result, f"could not write {out}.partial")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.metrics.csv", "b.pt.partial"]
    assert torch.load(f"{out}.partial", weights_only=True)["epoch"] == 1  # the last good one
    resumed = run("train-backbone", *TINY_TRAIN, "--epochs", "3", "--out", str(out))
    assert resumed.exit_code == 0, resumed.stderr
    assert "resuming" in resumed.stderr and "after epoch 1/3" in resumed.stderr


def test_disk_full_while_writing_a_table_or_a_classifier(tmp_path):
    store = make_store(tmp_path / "s.h5")
    assert run("confusing-classes", str(store), "--quiet").exit_code == 0  # s.table.pt, read below
    table = tmp_path / "t.pt"
    shutil.copy(tmp_path / "s.table.pt", table)  # an earlier table (--force replaces only one)
    before = snapshot(tmp_path)
    with file_size_limit(1000):  # a table or a classifier takes a few kB; the store is only read
        refused = run("confusing-classes", str(store), "--out", str(table), "--force", "--quiet")
        assert_refused(refused, f"could not write {table}: file too large", folder=tmp_path, before=before)
        clf = run("augment-finetune", str(store), *ITERS, "--quiet")
        assert_refused(clf, f"could not write {tmp_path / 's.fsa.pt'}", folder=tmp_path, before=before)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "s.fsa.metrics.csv"])  # the run's log


# ---- kills and Ctrl-C of real processes ----------------------------------------------------------

def _ltkit(*args: str, env: dict[str, str] = ENV) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ltkit", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                            preexec_fn=interruptible)


@pytest.mark.e2e
def test_train_backbone_ctrl_c_keeps_the_resume_state(tmp_path):
    out, marker = tmp_path / "b.pt", tmp_path / "paused"
    proc = _ltkit("train-backbone", *TINY_TRAIN, "--epochs", "5", "--out", str(out),
                  env=pause_env(ENV, "epoch-end", 1, marker))
    wait_until_paused(proc, marker)  # the resume state after epoch 1 is on disk
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 130, err[-800:]
    assert "interrupted" in err and "rerun the same command to resume" in err and "Traceback" not in err
    assert not out.exists() and not Path(f"{out}.partial.tmp").exists()
    assert torch.load(f"{out}.partial", weights_only=True)["epoch"] in range(1, 5)
    resumed = run("train-backbone", *TINY_TRAIN, "--epochs", "5", "--out", str(out))
    assert resumed.exit_code == 0 and "resuming" in resumed.stderr, resumed.stderr[-800:]


@pytest.mark.e2e
def test_augment_finetune_killed_or_interrupted_leaves_nothing_and_restarts(tmp_path, tmp_path_factory):
    store = make_store(tmp_path / "s.h5")
    args = ["augment-finetune", str(store), "--iterations", "2000", "--batch-size", "32",
            "--device", "cpu", "--threads", "1",  # FSA's options fixed: the pause lands in the run, not an auto trial
            "--tau-s", "0.5", "--tau-g", "0.3", "--gamma-min", "0", "--tail-draw", "class", "--head-draw", "class"]
    out_int, out_kill = tmp_path / "int.pt", tmp_path / "kill.pt"
    markers = tmp_path_factory.mktemp("markers") / "int", tmp_path_factory.mktemp("markers") / "kill"
    run("confusing-classes", str(store), "--quiet")  # the table both processes use
    interrupted = _ltkit(*args, "--out", str(out_int), env=pause_env(ENV, "iteration", 100, markers[0]))
    killed = _ltkit(*args, "--out", str(out_kill), env=pause_env(ENV, "iteration", 100, markers[1]))
    wait_until_paused(interrupted, markers[0])  # 100 of 2000 iterations done
    interrupted.send_signal(signal.SIGINT)
    wait_until_paused(killed, markers[1])
    killed.kill()
    _, err = interrupted.communicate(timeout=DEADLINE_S)
    killed.communicate(timeout=DEADLINE_S)
    assert interrupted.returncode == 130 and "interrupted" in err and "Traceback" not in err, err[-800:]
    assert killed.returncode == -signal.SIGKILL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int.metrics.csv", "kill.metrics.csv", "s.backbone.pt",
                                                          "s.h5", "s.table.pt"]  # only the logs of what ran
    assert [row["iteration"] for row in read_log(tmp_path / "kill.metrics.csv")] == ["50"]  # flushed before the kill
    Path(f"{out_kill}.partial").write_bytes(b"what a kill during the write would leave")
    again = run(*args, "--out", str(out_kill), "--quiet")
    assert again.exit_code == 0, again.stderr
    assert load_classifier(out_kill)[1]["options"]["iterations"] == 2000
    assert not Path(f"{out_kill}.partial").exists()
    log = [int(row["iteration"]) for row in read_log(tmp_path / "kill.metrics.csv")]
    assert log == list(range(50, 2001, 50))  # the rerun's log, started afresh


# ---- concurrency ------------------------------------------------------------------------------------

READER = """
import hashlib, sys
from ltkit.store import open_store
digest = hashlib.sha256()
for _ in range(int(sys.argv[2])):
    with open_store(sys.argv[1]) as st:
        for split in st.splits:
            for name in st.names(split):
                digest.update(st.read(split, name).tobytes())
print(digest.hexdigest())
"""


@pytest.mark.e2e  # two reader processes
def test_two_readers_of_one_store_at_once(tmp_path):
    import hashlib

    store = make_store(tmp_path / "s.h5", views=1)
    rounds = 10
    digest = hashlib.sha256()
    with open_store(store) as held:  # this process reads too, holding the file open throughout
        procs = [subprocess.Popen([sys.executable, "-c", READER, str(store), str(rounds)], env=ENV,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        for _ in range(rounds):
            for split in held.splits:
                for name in held.names(split):
                    digest.update(held.read(split, name).tobytes())
        outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    assert {out.strip() for out, _ in outputs} == {digest.hexdigest()}


def test_a_store_replaced_while_open_is_read_whole_from_the_old_file(tmp_path):
    store = make_store(tmp_path / "s.h5")
    other = make_store(tmp_path / "other.h5", seed=1)
    with open_store(store) as st:
        expected = {n: st.read("train", n) for n in ("features", "pooled")}
        first = open_store(store)  # opened, nothing read yet: as a reader that started just now
        os.replace(other, store)  # extract --force renames a new store over the old one
        for name, values in expected.items():
            np.testing.assert_array_equal(first.read("train", name), values)
        first.close()
    with open_store(store) as st:  # a reader opening now sees the new store
        assert not np.array_equal(st.read("train", "pooled"), expected["pooled"])


@pytest.mark.e2e
def test_second_extract_refused_and_evaluate_reads_beside_a_running_extract(ckpt, tmp_path):
    out, neighbour = tmp_path / "s.h5", tmp_path / "done.h5"
    args = ["extract", str(ckpt), "--out", str(out), *RESUME_ARGS]
    reference = tmp_path / "ref" / "ref.h5"
    assert run(*args[:3], str(reference), *args[4:], "--quiet").exit_code == 0
    shutil.copy(reference, neighbour)
    marker = tmp_path / "paused"
    first = _ltkit(*args, env=pause_env(ENV, "extract-rows", 8, marker))
    wait_until_paused(first, marker)  # rows written, the lock held, the extraction unfinished
    second = run(*args, "--quiet")  # the same output: refused at once, the first untouched
    assert_refused(second, f"another ltkit extract is writing {out}")
    evaluations = [run("evaluate", str(neighbour), "--quiet") for _ in range(3)]  # while it holds the partial
    assert first.poll() is None and not out.exists()
    marker.unlink()  # the first carries on
    stdout, err = first.communicate(timeout=180)
    assert first.returncode == 0 and stdout == f"{out}\n", err[-800:]
    assert_same_datasets(out, reference)
    results = [json.loads(e.stdout) for e in evaluations]
    assert all(e.exit_code == 0 for e in evaluations)
    assert all(r["top1"] == results[0]["top1"] and r["per_class"] == results[0]["per_class"] for r in results)
    with open_store(neighbour) as st:
        assert st.sha256() == open_store(reference).sha256()
