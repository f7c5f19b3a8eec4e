"""`ltkit sweep`: the plan from the registries, the folder, reuse and resume, the choice on validation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ltkit.augment import AUGMENTERS
from ltkit.cli import app
from ltkit.errors import ArtifactError
from ltkit.finetune_config import FinetuneConfig, method_name
from ltkit.methods import CLASSIFIERS, TrainingFreeMethod
from ltkit.sweep import PAIRED, plan
from ltkit.sweep_results import MARKER, MethodRow, choose, prepare_folder
from pausing import pause_env, wait_until_paused
from storefixtures import make_store

FAST = ("--seeds", "2", "--iterations", "20", "--device", "cpu")
ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, stdin: str | None = None):
    return CliRunner().invoke(app, list(args), input=stdin)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A store, and one finished sweep of it (2 seeds, 20 iterations per trained run)."""
    store = make_store(tmp_path_factory.mktemp("sweep") / "features.h5")
    result = run("sweep", str(store), *FAST)
    assert result.exit_code == 0, result.stderr
    return store, Path(result.stdout.strip()), store.parent / "features.sweep"


def test_the_plan_is_every_registered_classifier_and_every_augmenter_with_crt():
    planned, left_out = plan("linear", True, frozenset({"train", "val", "test"}))
    names = [p.method for p in planned]
    expected = {method_name(FinetuneConfig(classifier=c)) for c in CLASSIFIERS.names()}
    expected |= {method_name(FinetuneConfig(classifier=PAIRED, augment=a)) for a in AUGMENTERS.names()}
    expected |= {"spatial-class-balanced-crt"}  # every head kind on the maps, with crt
    assert set(names) == expected and len(names) == len(expected) and not left_out
    # a spatial head needs the maps of every split it trains, chooses and is measured on
    for maps, needs in ((frozenset(), frozenset({"train", "val", "test"})),
                        (frozenset({"train", "val", "test"}), frozenset({"train", "val", "test", "bound"}))):
        planned, left_out = plan("linear", True, maps, needs)
        assert "spatial-class-balanced-crt" not in {p.method for p in planned}
        assert [r for r in left_out if r.startswith("spatial-class-balanced-crt: the store keeps no feature maps")]
    trains = [p.trains for p in planned]
    assert trains == sorted(trains)  # training-free (simplest) first
    # a cosine Phase-I head rules out what rescales a linear one; no maps rules out fsa
    cosine = {p.method for p in plan("cosine", True)[0]}
    assert "class-balanced-lws" not in cosine and "tau-norm" not in cosine and "ncm" in cosine
    assert not {p.method for p in plan("linear", False)[0]} & {"fsa", "fsa-crt"}


def test_a_newly_registered_method_joins_the_plan(monkeypatch):
    class Probe(TrainingFreeMethod):
        name = "probe"

    monkeypatch.setitem(CLASSIFIERS._items, "probe", Probe)
    assert "probe" in [p.method for p in plan("linear", True)[0]]


def _row(method: str, val: list[float], test: list[float], eligible: bool = True) -> MethodRow:
    def result(acc: float) -> dict:
        group = {"accuracy": acc}
        return {"balanced_accuracy": acc, "top1": acc, "splits": {"many": group, "medium": group, "few": group}}

    return MethodRow(method, {}, [f"{method}.pt"], [result(v) for v in val], [result(t) for t in test],
                     eligible=eligible)


def test_the_choice_is_made_on_validation_never_on_test():
    rows = [_row("phase1", [0.99], [0.99], eligible=False),      # best everywhere, but the reference
            _row("test-best", [0.80, 0.82], [0.95, 0.96]),      # best on test
            _row("val-best", [0.90, 0.88], [0.70, 0.71]),       # best on validation
            _row("val-tie", [0.88, 0.90], [0.99, 0.99])]        # the same mean on val, later: loses the tie
    assert choose(rows).method == "val-best"


def test_the_sweep_writes_every_run_and_the_comparison(swept):
    store, chosen, folder = swept
    summary = json.loads((folder / "sweep.json").read_text())
    methods = [m["method"] for m in summary["methods"]]
    assert methods[0] == "phase1" and set(methods[1:]) == {p.method for p in plan("linear", True)[0]}
    for m in summary["methods"][1:]:
        trains = CLASSIFIERS.get(FinetuneConfig.from_options(m["options"]).classifier).trains
        assert m["runs"] == (2 if trains else 1)
        for seed in range(m["runs"]):  # no bound split: methods tune on val's tune half
            for suffix in (".pt", ".val-select.json", ".test.json"):
                assert (folder / "runs" / f"{m['method']}.tune.seed{seed}{suffix}").is_file()
    best = max(m["summary"]["select_balanced"]["mean"] for m in summary["methods"][1:])
    first_best = next(m for m in summary["methods"][1:] if m["summary"]["select_balanced"]["mean"] == best)
    assert summary["chosen"]["method"] == first_best["method"]
    assert chosen == folder / "runs" / f"{first_best['method']}.tune.seed0.pt" == Path(summary["chosen"]["classifier"])
    assert summary["selection"]["select_on"] == "val" and summary["selection"]["val_halves"]["select"] == [1] * 6
    rank = 1 + sum(m["summary"]["balanced"]["mean"] > first_best["summary"]["balanced"]["mean"]
                   for m in summary["methods"][1:])
    assert summary["chosen"]["test_rank"] == rank and summary["chosen"]["ranked"] == len(methods) - 1
    table = (folder / "sweep.md").read_text().splitlines()
    assert len(table) == 4 + len(methods) and "(chosen)" in "\n".join(table) and "±" in table[2]
    assert f"**{rank} of {len(methods) - 1}**" in table[-1] and "val-select balanced" in table[0]
    assert (folder / "sweep.csv").read_text().count("\n") == 1 + len(methods)


def test_a_store_with_maps_sweeps_the_spatial_head_too(tmp_path):
    store = make_store(tmp_path / "features.h5", bound_per_class=4, spatial_splits=("train", "val", "test", "bound"))
    result = run("sweep", str(store), "--seeds", "1", "--iterations", "5", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    summary = json.loads((tmp_path / "features.sweep" / "sweep.json").read_text())
    spatial = next(m for m in summary["methods"] if m["method"] == "spatial-class-balanced-crt")
    assert spatial["options"]["head"] == "spatial" and spatial["runs"] == 1
    assert summary["selection"]["select_on"] == "bound"  # compared on the bound maps
    assert (tmp_path / "features.sweep" / "runs" / "spatial-class-balanced-crt.seed0.bound.json").is_file()


def test_sweep_then_evaluate_through_a_pipe(swept, tmp_path):
    store, chosen, folder = swept
    again = run("sweep", "-", *FAST, stdin=f"{store}\n")  # a rerun through stdin: everything reused
    assert again.exit_code == 0 and again.stdout.strip() == str(chosen)
    measured = run("evaluate", "-", "--device", "cpu", stdin=again.stdout)
    assert measured.exit_code == 0, measured.stderr
    assert json.loads(measured.stdout)["source"]["path"] == str(chosen.resolve())


def test_a_rerun_reuses_every_run(swept):
    store, chosen, folder = swept
    before = {p.name: p.stat().st_mtime_ns for p in (folder / "runs").iterdir()}
    again = run("sweep", str(store), *FAST)
    assert again.exit_code == 0 and again.stdout.strip() == str(chosen)
    assert {p.name: p.stat().st_mtime_ns for p in (folder / "runs").iterdir()} == before


def test_the_folder_is_never_anything_but_a_sweep(swept, tmp_path):
    store, _, folder = swept
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    for force in ((), ("--force",)):
        refused = run("sweep", str(store), *FAST, "--out", str(mine), *force)
        assert refused.exit_code == 2 and "not an earlier ltkit sweep" in refused.stderr
    assert (mine / "notes.txt").read_text() == "mine"
    with pytest.raises(ArtifactError, match="holds this sweep's input"):
        prepare_folder(store.parent, True, [store])
    # --force replaces an earlier sweep folder: a stray run file of before is gone
    copy = tmp_path / "copy.sweep"
    prepare_folder(copy, False, [store])
    (copy / "runs" / "old.seed0.pt").write_bytes(b"x")
    assert (copy / MARKER).is_file()
    prepare_folder(copy, True, [store])
    assert not (copy / "runs" / "old.seed0.pt").exists()


@pytest.mark.e2e
def test_a_killed_sweep_resumes_where_it_stopped(tmp_path):
    store = make_store(tmp_path / "features.h5")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    marker = tmp_path / "paused"
    cmd = [sys.executable, "-m", "ltkit", "sweep", str(store), *FAST]
    proc = subprocess.Popen(cmd, env=pause_env(env, "sweep-run", 4, marker), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_until_paused(proc, marker)  # phase1 and three runs are finished
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    folder = tmp_path / "features.sweep"
    done = {p.name: p.stat().st_mtime_ns for p in (folder / "runs").iterdir() if p.suffix == ".pt"}
    assert len(done) == 3 and not (folder / "sweep.json").exists()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert all((folder / "runs" / name).stat().st_mtime_ns == t for name, t in done.items())
    # the resumed sweep found what an uninterrupted one finds
    fresh = subprocess.run([*cmd, "--out", str(tmp_path / "fresh")], env=env, capture_output=True, text=True,
                           timeout=600)
    summaries = [json.loads((f / "sweep.json").read_text())["methods"] for f in (folder, tmp_path / "fresh")]
    assert [m["summary"] for m in summaries[0]] == [m["summary"] for m in summaries[1]]
    assert Path(again.stdout.strip()).name == Path(fresh.stdout.strip()).name


def test_a_rerun_after_a_default_changed_makes_the_stale_runs_again(swept, tmp_path, monkeypatch):
    """The sweep's folder is its own: a run whose resolved schedule changed since (a method's
    default did) is made again, the others are reused — never silently kept, never refused."""
    import shutil

    from ltkit.methods import get_method

    store, _, folder = swept
    copy = tmp_path / "copy.sweep"
    shutil.copytree(folder, copy)
    before = {p.name: p.stat().st_mtime_ns for p in (copy / "runs").glob("*.pt")}
    wb = type(get_method("wb"))
    monkeypatch.setattr(wb, "schedule", wb.schedule | {"lr": 2 * wb.schedule["lr"]})
    again = run("sweep", str(store), *FAST, "--out", str(copy))
    assert again.exit_code == 0, again.stderr
    after = {p.name: p.stat().st_mtime_ns for p in (copy / "runs").glob("*.pt")}
    remade = {name for name in before if after[name] != before[name]}
    assert remade and all("wb" in name for name in remade), remade
    assert "makes its run" in again.stderr and "another schedule" in again.stderr
