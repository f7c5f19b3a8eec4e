"""Accuracy on the real Fashion-MNIST-LT: every row of docs/results.md, regenerated.

One backbone recipe for every row (LDAM's ResNet-32, 10 epochs, batch 128, SGD lr 0.1 with
cosine decay, seed 0, exponential profile); what changes is the Phase-I loss, the imbalance
factor, or the Phase-II method. Each row's exact ltkit commands are run through the CLI and
written into the page. Artifacts already there are reused (every stage says so), so a rerun
after an interruption only does what is missing; a backbone not trained yet is trained
(minutes to an hour each on a CPU: see the page's timing notes) unless --no-train, in which
case its rows are listed as missing.

    python benchmarks/results.py                    # train what is missing, then the page
    python benchmarks/results.py --no-train         # only what can be made from finished backbones
    python benchmarks/results.py --seeds 0 1 2 --runs runs/results --out docs/results.md
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ("--data fashion-mnist-lt --profile exp --arch resnet32 --epochs 10 --batch-size 128 "
          "--lr 0.1 --seed 0")


@dataclass(frozen=True)
class Backbone:
    name: str     # folder under --runs
    args: str     # train-backbone options beyond RECIPE
    label: str    # how the page names it
    tail_of: str | None = None  # measure the FSA tail with this backbone's table, not its own


BACKBONES = [
    Backbone("if100-ce", "--imbalance 100 --loss ce", "CE"),
    Backbone("if100-focal", "--imbalance 100 --loss focal", "focal (gamma 1)"),
    Backbone("if100-cb", "--imbalance 100 --loss cb", "class-balanced (beta 0.9999)"),
    Backbone("if100-ldam-drw", "--imbalance 100 --loss ldam --drw-epoch 8", "LDAM-DRW"),
    Backbone("if100-balanced-softmax", "--imbalance 100 --loss balanced-softmax", "balanced softmax"),
    Backbone("if100-scl-ldam", "--imbalance 100 --loss ldam --drw-epoch 8 --scl-weight 0.5", "SCL + LDAM-DRW"),
    Backbone("if100-scl-rsg-ldam", "--imbalance 100 --loss ldam --drw-epoch 8 --scl-weight 0.5 --rsg",
             "SCL + RSG + LDAM-DRW"),
    Backbone("if10-ce", "--imbalance 10 --loss ce", "CE, IF 10"),
    Backbone("if200-ce", "--imbalance 200 --loss ce", "CE, IF 200"),
    Backbone("full-ce", "--imbalance 1 --loss ce", "CE, full balanced set (ceiling)", tail_of="if100-ce"),
]
PHASE2 = {"none": "--augment none", "crt": "--classifier crt", "lws": "--classifier lws",
          "tau-norm": "--classifier tau-norm", "ncm": "--classifier ncm", "cloud": "--augment cloud",
          "fsa": "--augment fsa"}
PHASE2_ON = ("if100-ce", "if10-ce", "if200-ce")  # every Phase-II method, several seeds
FSA_ON = ("if100-ldam-drw", "if100-scl-ldam", "if100-scl-rsg-ldam")  # FSA after each system
COLUMNS = ("overall", "many", "medium", "few", "tail", "balanced")


def ltkit(*args: str) -> str:
    """Run one ltkit command; its stdout (the artifact path, or JSON)."""
    cmd = [str(Path(sys.executable).with_name("ltkit")), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(['ltkit', *args])} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def shown(*args: str) -> str:
    return shlex.join(["ltkit", *args])


def figures(result: dict) -> dict[str, float | None]:
    """The page's columns from one evaluation JSON, in %."""
    pct = lambda v: None if v is None else 100.0 * v  # noqa: E731
    splits, fsa = result["splits"], result.get("fsa") or {}
    return {"overall": pct(result["top1"]), "balanced": pct(result["balanced_accuracy"]),
            **{g: pct(splits[g]["accuracy"]) for g in ("many", "medium", "few")},
            "tail": pct((fsa.get("tail") or {}).get("accuracy"))}


def prepare(b: Backbone, runs: Path, train: bool) -> dict | None:
    """Backbone -> store -> table -> Phase-I evaluation; None when the backbone is missing."""
    folder = runs / b.name
    ckpt, store, table = folder / "backbone.pt", folder / "features.h5", folder / "table.pt"
    if b.tail_of:  # a balanced set has no tail of its own: the IF 100 store's tail classes
        table = runs / b.tail_of / "table.pt"
    train_args = [*f"train-backbone {RECIPE} {b.args}".split(), "--out", str(ckpt), "--quiet"]
    if not ckpt.exists():
        if not train:
            return None
        start = time.time()
        ltkit(*train_args)
        print(f"trained {b.name} in {time.time() - start:.0f} s", file=sys.stderr)
    ltkit("extract", str(ckpt), "--out", str(store), "--quiet")
    commands = [shown(*train_args[:-1]), shown("extract", str(ckpt), "--out", str(store))]
    if not b.tail_of:
        ltkit("confusing-classes", str(store), "--out", str(table), "--quiet")
        commands.append(shown("confusing-classes", str(store), "--out", str(table)))
    phase1 = json.loads(ltkit("evaluate", str(store), "--table", str(table), "--quiet"))
    commands.append(shown("evaluate", str(store), "--table", str(table)))
    return {"backbone": b, "store": store, "table": table, "phase1": figures(phase1), "commands": commands}


def phase2(prep: dict, method: str, seeds: list[int]) -> dict:
    """One Phase-II method over ``seeds`` on a prepared backbone: per-seed figures, command."""
    folder = prep["store"].parent
    runs = []
    for seed in seeds:
        out = folder / f"{method}-s{seed}.pt"
        args = ["augment-finetune", str(prep["table"]), *PHASE2[method].split(), "--seed", str(seed),
                "--out", str(out)]
        ltkit(*args, "--quiet")
        runs.append(figures(json.loads(ltkit("evaluate", str(out), "--quiet"))))
    command = shown(*args) + " | ltkit evaluate -"
    command = command.replace(f"--seed {seeds[-1]}", "--seed S").replace(f"-s{seeds[-1]}.pt", "-sS.pt")
    return {"runs": runs, "command": command}


def mean_std(runs: list[dict], key: str) -> str:
    values = [r[key] for r in runs if r[key] is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def table(rows: list[tuple[str, list[dict]]], base: float | None = None,
          ceiling: float | None = None) -> list[str]:
    """Markdown rows: a method's runs -> mean ± std per column; with a ceiling, the share of
    the base-to-ceiling gap (balanced accuracy) the method closes."""
    gap = ceiling is not None and base is not None
    head = ["method", *(f"{c} %" for c in COLUMNS)] + (["gap closed"] if gap else [])
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for name, runs in rows:
        cells = [name, *(mean_std(runs, c) for c in COLUMNS)]
        if gap:
            cells.append(gap_closed(runs, base, ceiling))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def gap_closed(runs: list[dict], base: float, ceiling: float) -> str:
    if ceiling <= base:
        return "—"
    return f"{100 * (statistics.mean(r['balanced'] for r in runs) - base) / (ceiling - base):.0f} %"


# Published top-1 accuracy on CIFAR-10-LT (exponential profile, balanced test set): another
# data set, quoted for the relative gains only. Chu et al. 2020, Table 1 (ResNet-18, their
# training schedule); Cao et al. 2019 (LDAM-DRW), Table 2 (ResNet-32, top-1 error 100 - x).
PUBLISHED = [
    ("Chu et al. Table 1, ResNet-18", {"CE (baseline)": (90.73, 75.16, 70.22), "CB beta 0.9999": (89.61, 75.04, 69.21),
                                       "focal gamma 1": (90.59, 74.07, 68.23), "FSA (theirs)": (91.75, 80.57, 77.06)}),
    ("Cao et al. Table 2, ResNet-32", {"CE (ERM)": (86.39, 70.36, None), "LDAM-DRW": (88.16, 77.03, None)}),
]


def _mean(runs: list[dict], key: str) -> float:
    return statistics.mean(r[key] for r in runs)


def reading(p1: dict, results: dict, ceiling: float | None = None) -> list[str]:
    """What the tables say, computed from them (balanced accuracy, points)."""
    lines = []
    if ceiling is not None:
        lines.append(f"- Ceiling (CE on the full balanced training set): {ceiling:.2f}.")
    for k, factor in (("if10-ce", 10), ("if100-ce", 100), ("if200-ce", 200)):
        if k not in results:
            continue
        r = results[k]
        best = max(r, key=lambda m: _mean(r[m]["runs"], "balanced"))
        fsa, none = _mean(r["fsa"]["runs"], "balanced"), _mean(r["none"]["runs"], "balanced")
        lines.append(f"- IF {factor}: Phase I {p1[k]['balanced']:.2f}; best Phase-II method `{best}` "
                     f"{_mean(r[best]['runs'], 'balanced'):.2f}; FSA {fsa:.2f}, {fsa - p1[k]['balanced']:+.2f} "
                     f"over Phase I and {fsa - none:+.2f} against the same balanced batches without "
                     f"augmentation (`none`); FSA tail {_mean(r['fsa']['runs'], 'tail'):.2f} vs "
                     f"`none` {_mean(r['none']['runs'], 'tail'):.2f}."
                     + (f" Of the gap from Phase I to the ceiling, FSA closes "
                        f"{gap_closed(r['fsa']['runs'], p1[k]['balanced'], ceiling)}, `{best}` "
                        f"{gap_closed(r[best]['runs'], p1[k]['balanced'], ceiling)}." if ceiling else ""))
    for k in ("if100-ldam-drw", "if100-scl-ldam", "if100-scl-rsg-ldam"):
        if k in p1 and "if100-ce" in p1:
            fsa = results.get(k, {}).get("fsa")
            after = f"; after FSA {_mean(fsa['runs'], 'balanced'):.2f}" if fsa else ""
            lines.append(f"- `{k}`: Phase I {p1[k]['balanced']:.2f} "
                         f"({p1[k]['balanced'] - p1['if100-ce']['balanced']:+.2f} against CE){after}.")
    return ["## Reading", "", "Computed from the tables (balanced accuracy, %):", ""] + lines + [""] if lines else []


def render(preps: dict, results: dict, seeds: list[int]) -> str:
    done = {k: v for k, v in preps.items() if v}
    p1 = {k: v["phase1"] for k, v in done.items()}
    ceiling = p1.get("full-ce", {}).get("balanced")
    out = ["# Results on the real Fashion-MNIST-LT", "",
           "Written by `python benchmarks/results.py` (it runs every command below; rerun it to "
           "refresh this page). Fashion-MNIST-LT: the real Fashion-MNIST (Debian's "
           "`dataset-fashion-mnist`), training set cut to an exponential long-tail profile "
           "(the LDAM-DRW protocol; IF = n_max / n_min, 5,980 images in the largest class), "
           "20 validation images per class kept out of training, the balanced 10,000-image test "
           "set for every figure.", "",
           f"**One backbone recipe for every row**: `{RECIPE}` — LDAM's ResNet-32, 10 epochs "
           "(short, to fit a 2-core CPU: ~20 min a backbone there), cosine learning rate, instance "
           f"sampling. Phase II: each method's defaults, {len(seeds)} seeds ({', '.join(map(str, seeds))}), "
           "mean ± std; "
           "Phase-I rows are one backbone (seed 0).", "",
           "Columns: **overall** top-1 on the test set; **many** / **medium** / **few**: classes with "
           "> 100, 20–100, < 20 training images (Fashion-MNIST-LT at IF <= 200 has no class under "
           "20 images, so *few* is empty — shown as —, never 0); **tail**: the FSA tail (classes "
           "outside the head that holds 90 % of the training images, `confusing-classes` "
           "defaults); **balanced**: mean per-class accuracy (equal to overall on this balanced "
           "test set). **gap closed**: the share of the distance from the CE backbone's Phase-I "
           "balanced accuracy to the ceiling (the same recipe on the full balanced training set) "
           "that a method closes.", ""]
    if "if100-ce" in results:
        base = p1["if100-ce"]["balanced"]
        out += ["## Imbalance factor 100: Phase II on the CE backbone", ""]
        out += table([("phase1 (CE)", [p1["if100-ce"]])] +
                     [(m, r["runs"]) for m, r in results["if100-ce"].items()], base, ceiling)
        out += [""]
    rows = [(preps[k]["backbone"].label if preps.get(k) else k, [p1[k]]) for k in
            ("if100-ce", "if100-focal", "if100-cb", "if100-ldam-drw", "if100-balanced-softmax") if k in p1]
    if rows:
        base = p1.get("if100-ce", {}).get("balanced")
        out += ["## Imbalance factor 100: Phase-I losses", ""] + table(rows, base, ceiling) + [""]
    system = [k for k in ("if100-ce", "if100-ldam-drw", "if100-scl-ldam", "if100-scl-rsg-ldam") if k in p1]
    if system:
        out += ["## The SCL + RSG + LDAM system, and FSA after it (IF 100)", "",
                "Same recipe; SCL weight 0.5 (SupCon temperature 0.07, two views per image), RSG "
                "with its defaults from epoch 8, DRW from epoch 8. FSA: the paper's Phase II on "
                "each backbone's own store.", ""]
        rows = []
        for k in system:
            label = preps[k]["backbone"].label
            rows.append((f"{label}: Phase I", [p1[k]]))
            fsa = results.get(k, {}).get("fsa")
            if fsa:
                rows.append((f"{label}: + FSA", fsa["runs"]))
        out += table(rows, p1.get("if100-ce", {}).get("balanced"), ceiling) + [""]
    for k, factor in (("if10-ce", 10), ("if200-ce", 200)):
        if k in results:
            base = p1[k]["balanced"]
            out += [f"## Imbalance factor {factor}: Phase II on the CE backbone", ""]
            out += table([("phase1 (CE)", [p1[k]])] + [(m, r["runs"]) for m, r in results[k].items()],
                         base, ceiling) + [""]
    out += reading(p1, results, ceiling)
    if ceiling is not None:
        out += ["## The ceiling", "", f"CE on the full balanced training set (5,980 images per class "
                f"once the validation images are out; same recipe, `--imbalance 1`): balanced "
                f"accuracy **{ceiling:.2f} %**. Its *tail* is measured on the IF 100 CE store's tail "
                f"classes (`--table` of `if100-ce`), so it compares with the IF 100 tables' tail "
                f"column; its *many* is every class (each has 5,980 training images). The gap-closed "
                f"columns of the IF 10 and IF 200 tables measure from their own Phase I to this same "
                f"ceiling.", ""] + table([("CE, full balanced set", [p1["full-ce"]])]) + [""]
    out += ["## Published numbers on CIFAR-10-LT (another data set)", "",
            "For the relative gains only: CIFAR-10-LT is harder than Fashion-MNIST-LT and the "
            "papers train far longer (200 epochs). Top-1 % at IF 10 / 100 / 200.", "",
            "| source | method | IF 10 | IF 100 | IF 200 |", "| --- | --- | ---: | ---: | ---: |"]
    for source, methods in PUBLISHED:
        for method, values in methods.items():
            cells = " | ".join("—" if v is None else f"{v:.2f}" for v in values)
            out.append(f"| {source} | {method} | {cells} |")
    out += ["", "What they show: on CIFAR-10-LT, FSA gains +5.4 points over CE at IF 100 and +6.8 "
            "at IF 200 in Chu et al.'s own training, while CB and focal losses do not beat CE; "
            "LDAM-DRW gains +6.7 at IF 100. Compare the relative gains in the tables above, not "
            "the absolute accuracies.", "", "## Commands", ""]
    for k, prep in preps.items():
        if prep is None:
            continue
        out += [f"**{prep['backbone'].label}** (`{k}`):", "", "```"] + prep["commands"]
        for m, r in results.get(k, {}).items():
            out.append(f"{r['command']}   # S in {', '.join(map(str, seeds))}")
        out += ["```", ""]
    missing = [b for b in BACKBONES if preps.get(b.name) is None]
    if missing:
        out += ["## Not measured yet", "", "These backbones were not trained when the page was "
                "written; `python benchmarks/results.py` trains them (resuming any interrupted run):", ""]
        out += [f"- {b.label}: `{shown(*f'train-backbone {RECIPE} {b.args}'.split())} --out "
                f"runs/results/{b.name}/backbone.pt`" for b in missing] + [""]
    return "\n".join(out)


README_START, README_END = "<!-- results: start (written by benchmarks/results.py) -->", "<!-- results: end -->"
HEADLINE = (("phase1", "Phase I (CE)"), ("fsa", "FSA (Chu et al., Algorithm 1)"),
            ("none", "balanced fine-tuning, no augmentation"), ("crt", "cRT"))


def update_readme(p1: dict, ce100: dict, ceiling: dict | None = None,
                  readme: Path = Path("README.md")) -> None:
    """The README's headline table (IF 100, CE backbone), between its markers; with the
    ceiling's figures, the share of the gap to it each row closes."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return
    gap = ceiling is not None
    rows = ["| method | overall % | tail % |" + (" gap closed |" if gap else ""),
            "| --- | ---: | ---: |" + (" ---: |" if gap else "")]
    for key, label in HEADLINE:
        runs = [p1] if key == "phase1" else ce100[key]["runs"]
        cells = [label, mean_std(runs, 'overall'), mean_std(runs, 'tail')]
        if gap:
            cells.append(gap_closed(runs, p1["balanced"], ceiling["balanced"]))
        rows.append("| " + " | ".join(cells) + " |")
    if gap:
        rows.append(f"| ceiling: CE on the full balanced set | {mean_std([ceiling], 'overall')} | "
                    f"{mean_std([ceiling], 'tail')} | 100 % |")
    head, rest = text.split(README_START, 1)
    readme.write_text(head + README_START + "\n" + "\n".join(rows) + "\n" + README_END + rest.split(README_END, 1)[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/results", help="artifact folder (git-ignored)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Phase-II seeds")
    parser.add_argument("--out", default="docs/results.md", help="the page to write")
    parser.add_argument("--no-train", dest="train", action="store_false", help="use finished backbones only")
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # every path below, and in the page's commands, is relative to the repository
    runs = Path(args.runs)
    preps = {b.name: prepare(b, runs, args.train) for b in BACKBONES}
    done = {k: v for k, v in preps.items() if v}
    results = {name: {m: phase2(done[name], m, args.seeds) for m in PHASE2} for name in PHASE2_ON if name in done}
    for name in FSA_ON:
        if name in done:
            results[name] = {"fsa": phase2(done[name], "fsa", args.seeds)}
    (runs / "results.json").write_text(json.dumps(
        {"phase1": {k: v["phase1"] for k, v in done.items()},
         "phase2": {k: {m: r["runs"] for m, r in v.items()} for k, v in results.items()}}, indent=1))
    Path(args.out).write_text(render(preps, results, args.seeds))
    if "if100-ce" in results:
        update_readme(done["if100-ce"]["phase1"], results["if100-ce"], done.get("full-ce", {}).get("phase1"))
    print(Path(args.out).resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
