"""Outputs that could destroy a user's files, and results that cannot reach stdout
(docs/reliability.md, "Outputs never destroy an input").

The rule (STYLE habit 12): an output path that is one of the stage's inputs is refused,
`--force` or not; `--force` replaces only an earlier output of the same stage (an artifact of
the same kind, a report folder with its marker); two outputs of one stage never share a path.
Every refusal is checked with `assert_refused`: exit 2, one line, nothing on stdout, every
file in the folder byte for byte as before.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from entrypoint import run_main
from ltkit.cli import app
from ltkit.cli.common import run_stage
from ltkit.confusing import ConfusingConfig, build_table
from ltkit.report import MARKER
from storefixtures import make_store
from test_extract import make_checkpoint
from test_reliability import ITERS, assert_refused, snapshot

REPO = Path(__file__).resolve().parents[1]
LTKIT = [sys.executable, "-m", "ltkit"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(app, list(args), input=input)


@pytest.fixture()
def w(tmp_path) -> Path:
    """A user's folder: a store `s.h5`, its table `s.table.pt`, a classifier `clf.pt`, a backbone `bb.pt`."""
    folder = tmp_path / "w"
    folder.mkdir()
    store = make_store(folder / "s.h5")
    build_table(store, ConfusingConfig(head_ratio=0.8), out=folder / "s.table.pt")
    result = run("augment-finetune", str(folder / "s.table.pt"), *ITERS, "--out", str(folder / "clf.pt"), "--quiet")
    assert result.exit_code == 0, result.stderr
    make_checkpoint(folder / "bb.pt")
    return folder


# ---- report folders ---------------------------------------------------------------------------

def test_report_force_never_removes_the_folder_of_its_input(w):
    before = snapshot(w.parent)
    assert_refused(run("evaluate", str(w / "s.h5"), "--report", str(w), "--force"),
                   "holds this evaluation's input", folder=w.parent, before=before)


def test_report_force_never_removes_the_current_folder_or_one_above(w, monkeypatch):
    inner = w / "x" / "inner"
    inner.mkdir(parents=True)
    (inner / "notes.txt").write_text("mine")
    monkeypatch.chdir(inner)
    before = snapshot(w.parent)
    for target in ("..", ".", str(w.parent)):
        assert_refused(run("evaluate", str(w / "s.h5"), "--report", target, "--force"),
                       "the current folder or one above it", folder=w.parent, before=before)


def test_report_force_replaces_only_an_earlier_report(w, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    before = snapshot(tmp_path)
    assert_refused(run("evaluate", str(w / "s.h5"), "--report", str(mine), "--force"),
                   "not an earlier ltkit report", folder=tmp_path, before=before)
    # a folder that looks like a report but holds one more file of the user's is not one either
    report = tmp_path / "report"
    assert run("evaluate", str(w / "s.h5"), "--report", str(report), "--quiet").exit_code == 0
    assert (report / MARKER).is_file() and (report / "metrics.json").is_file()
    (report / "extra.txt").write_text("mine")
    before = snapshot(tmp_path)
    assert_refused(run("evaluate", str(w / "s.h5"), "--report", str(report), "--force"),
                   "not an earlier ltkit report", folder=tmp_path, before=before)
    (report / "extra.txt").unlink()
    result = run("evaluate", str(w / "s.h5"), "--report", str(report), "--force", "--quiet")
    assert result.exit_code == 0, result.stderr  # an earlier report is replaced
    assert sorted(p.name for p in report.iterdir()) == sorted(
        [MARKER, "metrics.json", "per_class.csv", "confusion.csv", "summary.md", "per_class_accuracy.png",
         "confusion_matrix.png", "reliability.png"])


def test_report_never_removes_a_partial_folder_that_is_not_a_report(w, tmp_path):
    partial = tmp_path / "R.partial"
    partial.mkdir()
    (partial / "data.csv").write_text("mine")
    before = snapshot(tmp_path)
    for extra in ([], ["--force"]):
        assert_refused(run("evaluate", str(w / "s.h5"), "--report", str(tmp_path / "R"), *extra),
                       "is not an unfinished ltkit report", folder=tmp_path, before=before)
    # the partial of a crashed report (its marker written first) is taken over
    (partial / "data.csv").unlink()
    (partial / MARKER).write_text("ltkit\n")
    assert run("evaluate", str(w / "s.h5"), "--report", str(tmp_path / "R"), "--quiet").exit_code == 0
    assert not partial.exists() and (tmp_path / "R" / "metrics.json").is_file()


# ---- an output equal to an input, or an artifact of another kind -----------------------------

@pytest.mark.parametrize("args, needle", [
    (["extract", "bb.pt", "--out", "bb.pt"], "this stage's input"),
    (["confusing-classes", "s.h5", "--out", "s.h5"], "this stage's input"),
    (["confusing-classes", "s.h5", "--out", "./x/../s.h5"], "this stage's input"),
    (["plot-features", "s.h5", "--out", "s.h5"], "this stage's input"),
    (["augment-finetune", "s.table.pt", "--out", "s.h5", *ITERS], "this stage's input"),
    (["augment-finetune", "s.table.pt", "--out", "s.table.pt", *ITERS], "this stage's input"),
    (["augment-finetune", "s.table.pt", "--out", "bb.pt", *ITERS], "not an earlier classifier"),
    (["augment-finetune", "s.table.pt", "--out", "link.pt", *ITERS], "this stage's input"),
    (["confusing-classes", "s.h5", "--out", "clf.pt"], "not an earlier confusing-class table"),
    (["extract", "bb.pt", "--out", "clf.pt", "--device", "cpu"], "not an earlier feature store"),
    (["plot-features", "s.h5", "--out", "clf.pt"], "not an earlier ltkit plot"),
    (["confusing-classes", "s.h5", "--out", "t2.pt", "--csv", "bb.pt"], "not an earlier table CSV export"),
])
def test_force_never_replaces_an_input_or_another_kind_of_file(w, monkeypatch, args, needle):
    (w / "link.pt").symlink_to(w / "s.table.pt")
    (w / "x").mkdir()
    monkeypatch.chdir(w)
    before = snapshot(w)
    assert_refused(run(*args, "--force"), needle, folder=w, before=before)


def test_train_backbone_force_never_replaces_a_store(w):
    before = snapshot(w)
    result = run("train-backbone", "--data", "synthetic", "--epochs", "1", "--device", "cpu",
                 "--out", str(w / "s.h5"), "--force")
    assert_refused(result, "not an earlier backbone checkpoint", folder=w, before=before)


def test_two_outputs_of_one_stage_never_share_a_path(w):
    before = snapshot(w)
    assert_refused(run("confusing-classes", str(w / "s.h5"), "--csv", str(w / "t.pt"), "--out", str(w / "t.pt")),
                   "--out and --csv are the same file", folder=w, before=before)


def test_force_replaces_an_earlier_artifact_of_the_same_kind(w):
    first = run("confusing-classes", str(w / "s.h5"), "--out", str(w / "t.pt"), "--csv", str(w / "t.csv"),
                "--quiet")
    assert first.exit_code == 0, first.stderr
    again = run("confusing-classes", str(w / "s.h5"), "--out", str(w / "t.pt"), "--csv", str(w / "t.csv"),
                "--top", "2", "--force", "--quiet")
    assert again.exit_code == 0, again.stderr


@pytest.mark.parametrize("make, needle", [
    (lambda w: w / "folder", "is a folder"),
    (lambda w: w / ("n" * 300 + ".pt"), "file names may be at most"),
    (lambda w: w / ("n" * 247 + ".pt"), "ltkit adds up to 17 while writing it"),  # used to say "disk full?"
    (lambda w: w / "s.h5" / "t.pt", "is a file, not a folder"),
])
def test_bad_output_paths_are_one_line(w, make, needle):
    (w / "folder").mkdir()
    before = snapshot(w)
    assert_refused(run("confusing-classes", str(w / "s.h5"), "--out", str(make(w)), "--force"), needle,
                   folder=w, before=before)


# ---- inputs ------------------------------------------------------------------------------------

def test_stdin_with_more_than_one_path_is_refused(w):
    result = run("evaluate", "-", input=f"{w / 's.h5'}\n{w / 'clf.pt'}\n")
    assert_refused(result, "stdin held 2 lines")


def test_a_folder_input_is_called_a_folder(w):
    assert_refused(run("evaluate", str(w)), "is a folder")


# ---- usage errors, bounds and signals (the real entry point) ----------------------------------



@pytest.mark.parametrize("argv, needle", [
    (["train-backbone", "--seed", str(2**64)], "--seed"),
    (["extract", "x.pt", "--seed", "-1"], "--seed"),
    (["augment-finetune", "x.pt", "--seed", str(2**64)], "--seed"),
    (["plot-features", "x.h5", "--seed", "-1"], "--seed"),
    (["extract", "x.pt", "--workers", "1000"], "--workers"),
    (["evaluate", "x.h5", "--ece-bins", "foo"], "--ece-bins"),
    (["evaluate", "x.h5", "--no-such-option"], "No such option"),
])
def test_usage_errors_are_one_line_exit_2(argv, needle, capsys, monkeypatch):
    code, out, err = run_main(argv, capsys, monkeypatch)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err


def test_sigterm_ends_a_stage_like_an_interrupt(capsys):
    def stage():
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0) if hasattr(signal, "sigtimedwait") else None
        raise AssertionError("SIGTERM did not stop the stage")

    with pytest.raises(typer.Exit) as exit_info:
        run_stage(stage)
    assert exit_info.value.exit_code == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("terminated:") and "resume" in err[0]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored after the stage


# ---- stdout that cannot take the result (real processes) -------------------------------------

@pytest.mark.e2e
@pytest.mark.parametrize("stdout, needle", [("full", "the device is full"), ("closed", "stdout is closed"),
                                            ("pipe", "pipe was closed")])
def test_a_result_that_cannot_reach_stdout_is_one_line_and_says_where_it_is(w, stdout, needle):
    cmd = [*LTKIT, "confusing-classes", str(w / "s.h5"), "--out", str(w / "t.pt"), "--quiet"]
    if stdout == "full":
        with open("/dev/full", "w") as full:
            done = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, text=True, env=ENV)
    elif stdout == "closed":
        done = subprocess.run(cmd, stdout=None, stderr=subprocess.PIPE, text=True, env=ENV,
                              preexec_fn=lambda: os.close(1))
    else:
        read, write = os.pipe()
        os.close(read)  # `| head -0`: nobody reads
        done = subprocess.run(cmd, stdout=write, stderr=subprocess.PIPE, text=True, env=ENV)
        os.close(write)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and needle in lines[0] and str(w / "t.pt") in lines[0], done.stderr
    assert (w / "t.pt").is_file()  # the artifact was written: the line says where it is


def test_plot_features_refuses_infinite_maps(w):
    import h5py
    import numpy as np

    with h5py.File(w / "s.h5", "r+") as f:  # one location vector of every training map
        maps = f["train/features"][()]
        maps[:, 0, 0, 0] = np.inf
        f["train/features"][...] = maps
    before = snapshot(w)
    result = run("plot-features", str(w / "s.h5"), "--classes", "0,1", "--out", str(w / "p.png"))
    assert_refused(result, "feature maps of the chosen classes hold NaN or infinite values", folder=w, before=before)
