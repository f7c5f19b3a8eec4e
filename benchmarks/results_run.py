"""Runs docs/results.md's commands through the ltkit CLI and gathers their figures.

Every artifact is made by the ltkit stage that always makes it, in the backbone's folder under
--runs, so a rerun reuses what is finished (each stage says so) and only the rest is done.
Evaluations are kept as ltkit's own JSON beside what they measure (``NAME.json``) and reused
while newer than every file they read. Nothing is ever written outside the backbone folders:
a backbone or store linked in from elsewhere is only read.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from results_plan import BY_NAME, CEILING_TAIL, RUNS, TWIN, Backbone

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("overall", "many", "medium", "few", "tail", "balanced")  # a sweep row's test figures kept


def ltkit(*args: str) -> str:
    """Run one ltkit command (this repository's ltkit); its stdout (an artifact path, or JSON)."""
    done = subprocess.run([sys.executable, "-m", "ltkit", *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{shown(*args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def shown(*args: str) -> str:
    return shlex.join(["ltkit", *args])


def evaluated(out: Path, source: Path, *options: str) -> dict:
    """`ltkit evaluate SOURCE OPTIONS` as JSON, kept at ``out``; reused while ``out`` is newer
    than every file the evaluation reads (and holds the bound section --bound asks for)."""
    reads = [source, *(Path(o) for o in options if o.endswith((".pt", ".h5")))]
    if out.exists() and all(out.stat().st_mtime_ns >= p.stat().st_mtime_ns for p in reads):
        result = json.loads(out.read_text())
        if bool(result.get("bound")) == ("--bound" in options):
            return result
    text = ltkit("evaluate", str(source), *options, "--quiet")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    return json.loads(text)


def figures(result: dict) -> dict[str, float | None]:
    """The page's figures from one evaluation JSON, in %: the columns, and with a bound
    section the bound's balanced accuracy and the classifier gap closed."""
    pct = lambda v: None if v is None else 100.0 * v  # noqa: E731
    splits, fsa, bound = result["splits"], result.get("fsa") or {}, result.get("bound") or {}
    return {"overall": pct(result["top1"]), "balanced": pct(result["balanced_accuracy"]),
            **{g: pct(splits[g]["accuracy"]) for g in ("many", "medium", "few")},
            "tail": pct((fsa.get("tail") or {}).get("accuracy")),
            "bound": pct(bound.get("balanced_accuracy")), "clf_gap": pct(bound.get("classifier_gap_closed"))}


def prepare(b: Backbone, runs: Path, train: bool) -> dict | None:
    """Backbone -> store -> table -> Phase I on test and val; None when the backbone is missing
    and ``train`` is off."""
    folder = b.folder(runs)
    ckpt, store, table = folder / "backbone.pt", folder / "features.h5", folder / "table.pt"
    if not ckpt.exists():
        if not train:
            return None
        start = time.time()
        ltkit(*b.train_args(runs), "--quiet")
        log(f"trained {b.name} in {time.time() - start:.0f} s")
    ltkit(*b.extract_args(runs), "--quiet")
    commands = [shown(*b.train_args(runs)), shown(*b.extract_args(runs))]
    if not b.ceiling:  # a balanced set has no tail of its own (see `tail_of`)
        ltkit("confusing-classes", str(store), "--out", str(table), "--quiet")
        commands.append(shown("confusing-classes", str(store), "--out", str(table)))
    on_table = [] if b.ceiling else ["--table", str(table)]
    phase1 = evaluated(folder / "phase1.json", store, *on_table)
    val = evaluated(folder / "phase1.val.json", store, "--split", "val")
    commands.append(shown("evaluate", str(store), *on_table))
    figs = figures(phase1)
    if b.ceiling:
        figs["tail"] = tail_of(phase1, BY_NAME[CEILING_TAIL].folder(runs) / "phase1.json")
    return {"name": b.name, "store": str(store), "table": str(table), "phase1": figs,
            "val": figures(val)["balanced"], "has_bound": not b.ceiling, "commands": commands}


def tail_of(result: dict, other: Path) -> float | None:
    """A ceiling's accuracy (%) on the tail classes of another store's evaluation ``other``
    (`CEILING_TAIL`'s Phase I): the mean of its per-class accuracies over those classes,
    weighted by their test images (a table of another store is refused by evaluate)."""
    if not other.exists():
        return None
    tail = {c["index"] for c in json.loads(other.read_text())["per_class"] if c.get("fsa") == "tail"}
    rows = [c for c in result["per_class"] if c["index"] in tail]
    images = sum(c["test_count"] for c in rows)
    return 100.0 * sum(c["accuracy"] * c["test_count"] for c in rows) / images if images else None


def method_runs(prep: dict, key: str, seeds: list[int]) -> dict:
    """One Phase-II run (`RUNS[key]`) over ``seeds`` on a prepared backbone: per-seed figures
    and the command; a run with a bound twin is evaluated against it (classifier gap closed:
    `with_twins` puts the twin first)."""
    folder, twin = Path(prep["store"]).parent, TWIN.get(key) if prep["has_bound"] else None
    figs = []
    for seed in seeds:
        out = folder / f"{key}-s{seed}.pt"
        args = ["augment-finetune", prep["table"], *RUNS[key].split(), "--seed", str(seed), "--out", str(out)]
        ltkit(*args, "--quiet")
        against = ["--bound", str(folder / f"{twin}-s{seed}.pt")] if twin else []
        figs.append(figures(evaluated(out.with_suffix(".json"), out, *against)))
    command = shown(*args) + " | " + shown("evaluate", "-", *against)
    for old, new in ((f"--seed {seeds[-1]}", "--seed S"), (f"-s{seeds[-1]}.pt", "-sS.pt")):
        command = command.replace(old, new)
    return {"runs": figs, "command": command}


def with_twins(keys: tuple[str, ...], prep: dict) -> list[str]:
    """``keys`` with each one's bound twin just before it, when the store has a bound split."""
    return [k for key in keys for k in ((TWIN[key],) if key in TWIN and prep["has_bound"] else ()) + (key,)]


def swept(prep: dict, seeds: list[int]) -> dict:
    """`ltkit sweep` on the backbone's table, seeds 0..N-1, into its folder's ``sweep/``: the
    chosen method, its test rank, cRT beside it, and the sweep's own table."""
    out = Path(prep["store"]).parent / "sweep"
    args = ["sweep", prep["table"], "--seeds", str(len(seeds)), "--out", str(out)]
    ltkit(*args, "--quiet")
    summary = sweep_summary(json.loads((out / "sweep.json").read_text()))
    return summary | {"markdown": (out / "sweep.md").read_text().strip(), "command": shown(*args)}


def sweep_summary(result: dict) -> dict:
    """From a sweep.json: the chosen method, its test rank, and its and cRT's test figures (%;
    None for a group the sweep has no figure for, such as an empty few split)."""
    rows = {m["method"]: m["summary"] for m in result["methods"]}
    chosen = result["chosen"]

    def pct(row: dict | None) -> dict:
        values = {k: ((row or {}).get(k) or {}).get("mean") for k in FIGURES}
        return {k: None if v is None else 100.0 * v for k, v in values.items()}

    return {"chosen": chosen["method"], "test_rank": chosen["test_rank"], "ranked": chosen["ranked"],
            "selected_on": result["selection"]["compared_on"], "pick": pct(rows[chosen["method"]]),
            "crt": pct(rows.get("class-balanced-crt"))}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
