"""docs/results.md from the figures `results_run` gathered: the page's frame, the sections that
read Phase-I losses and Phase-II methods, the ceiling, the commands and what is missing.
The bound, sweep and recipe sections are in `results_sections`. Pure: figures in, Markdown out.

``data``: {"seeds": [...], "preps": {backbone: prepared or None}, "runs": {backbone: {run key:
{"runs": [figures per seed], "command"}}}, "sweeps": {backbone: sweep summary}, "skipped": [...]}.
"""

from __future__ import annotations

import shlex
import statistics
from pathlib import Path

from ltkit.bound import gap_closed
from results_plan import BACKBONES, BY_NAME, CEILINGS, LOSSES, LT, PHASE2, SYSTEM

COLUMNS = ("overall", "many", "medium", "few", "tail", "balanced")


def mean(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.mean(values) if values else None


def mean_std(runs: list[dict], key: str) -> str:
    values = [r[key] for r in runs if r.get(key) is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def share(value: float | None) -> str:
    """A share in % (already scaled), or — when there is none."""
    return "—" if value is None else f"{value:.0f} %"


def closed(runs: list[dict], base: float | None, top: float | None) -> str:
    """The share of the base-to-top gap (balanced accuracy) the runs close on average
    (`ltkit.bound.gap_closed`, the formula evaluate and compare use)."""
    value = gap_closed(mean(runs, "balanced"), base, top)
    return share(None if value is None else 100 * value)


def table(rows: list[tuple[str, list[dict]]], base: float | None = None, ceiling: float | None = None,
          clf_gap: bool = False) -> list[str]:
    """Markdown rows: a method's runs -> mean ± std per column; with a ceiling, the share of
    the base-to-ceiling gap it closes; with ``clf_gap``, the classifier gap closed (to the
    same head's bound, from evaluate --bound)."""
    gap = ceiling is not None and base is not None
    head = ["method", *(f"{c} %" for c in COLUMNS)] + (["classifier gap closed"] if clf_gap else []) + \
        (["gap closed"] if gap else [])
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for name, runs in rows:
        cells = [name, *(mean_std(runs, c) for c in COLUMNS)]
        if clf_gap:
            cells.append(share(mean(runs, "clf_gap")))
        if gap:
            cells.append(closed(runs, base, ceiling))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def phase1(data: dict) -> dict[str, dict]:
    return {k: v["phase1"] for k, v in data["preps"].items() if v}


def ceiling_of(data: dict, epochs: int = 10) -> float | None:
    return phase1(data).get(CEILINGS[epochs], {}).get("balanced")


def label(name: str) -> str:
    return BY_NAME[name].label


def header(data: dict) -> list[str]:
    seeds = data["seeds"]
    return ["# Results on the real Fashion-MNIST-LT", "",
            "Written by `python benchmarks/results.py` (it runs every command below; rerun it to refresh this "
            "page). Fashion-MNIST-LT: the real Fashion-MNIST (Debian's `dataset-fashion-mnist`), training set cut "
            "to an exponential long-tail profile (the LDAM-DRW protocol; IF = n_max / n_min), 20 validation "
            "images per class kept out of training, and a **bound split** of 500 images per class held out of "
            "the images the profile leaves unused (`--bound-per-class 500`; the largest class gives up 500 of its "
            "own, so it keeps 5,480), the balanced 10,000-image test set for every figure.", "",
            f"**One backbone recipe for every row**: `{LT}`, then the schedule, the loss and `--bound-per-class "
            "500` — LDAM's ResNet-32, 10 epochs unless said (short, to fit a 2-core CPU: ~15-25 min a backbone "
            "there), cosine learning rate, instance sampling. Stores keep feature maps for every split "
            "(`--spatial-splits train,val,test,bound`). Phase II: each method's defaults, "
            f"{len(seeds)} seed(s) ({', '.join(map(str, seeds))}), mean ± std; Phase-I rows are one backbone "
            "(seed 0).", "",
            "Columns: **overall** top-1 on the test set; **many** / **medium** / **few**: classes with > 100, "
            "20–100, < 20 training images (empty below IF 1000 — shown as —, never 0); **tail**: the FSA tail "
            "(classes outside the head that holds 90 % of the training images, `confusing-classes` defaults); "
            "**balanced**: mean per-class accuracy (equal to overall on this balanced test set). **gap closed**: "
            "the share of the distance from the backbone's Phase-I balanced accuracy to the ceiling (the same "
            "recipe, 10 epochs, on the full balanced training set) that a method closes; **classifier gap "
            "closed**: the share of the distance from Phase I to the same head's bound (that head trained on the "
            "bound split) — `ltkit evaluate CLF --bound BOUND_CLF`, `ltkit compare`.", ""] + \
        ([f"Sections not on this page (left out with `--skip`, or not measured yet): {', '.join(data['skipped'])}.",
          ""] if data["skipped"] else [])


def phase2_sections(data: dict) -> list[str]:
    """Every Phase-II method on the CE backbones of IF 100, 10 and 200; the Phase-I losses; the
    SCL + RSG + LDAM system and FSA after it."""
    p1, runs, ceiling, out = phase1(data), data["runs"], ceiling_of(data), []
    for k, factor in (("if100-ce", 100), ("if10-ce", 10), ("if200-ce", 200)):
        if k in p1 and all(m in runs.get(k, {}) for m in PHASE2):
            out += [f"## Imbalance factor {factor}: Phase II on the CE backbone", ""]
            out += table([("phase1 (CE)", [p1[k]])] + [(m, runs[k][m]["runs"]) for m in PHASE2],
                         p1[k]["balanced"], ceiling) + [""]
        if factor == 100:
            out += losses(data)
    return out


def losses(data: dict) -> list[str]:
    p1, runs, ceiling = phase1(data), data["runs"], ceiling_of(data)
    base = p1.get("if100-ce", {}).get("balanced")
    out = []
    rows = [(label(k), [p1[k]]) for k in LOSSES if k in p1]
    if rows:
        out += ["## Imbalance factor 100: Phase-I losses", ""] + table(rows, base, ceiling) + [""]
    system = [k for k in SYSTEM if k in p1]
    if len(system) > 1:
        out += ["## The SCL + RSG + LDAM system, and FSA after it (IF 100)", "",
                "Same recipe; SCL weight 0.5 (SupCon temperature 0.07, two views per image), RSG with its "
                "defaults from epoch 8, DRW from epoch 8. FSA: the paper's Phase II on each backbone's own store.",
                ""]
        rows = []
        for k in system:
            rows.append((f"{label(k)}: Phase I", [p1[k]]))
            if "fsa" in runs.get(k, {}):
                rows.append((f"{label(k)}: + FSA", runs[k]["fsa"]["runs"]))
        out += table(rows, base, ceiling) + [""]
    return out


def reading(data: dict) -> list[str]:
    """What the Phase-II tables say, computed from them (balanced accuracy, points)."""
    p1, runs, ceiling, lines = phase1(data), data["runs"], ceiling_of(data), []
    if ceiling is not None:
        lines.append(f"- Ceiling (CE on the full balanced training set, 10 epochs): {ceiling:.2f}.")
    for k, factor in (("if10-ce", 10), ("if100-ce", 100), ("if200-ce", 200)):
        r = runs.get(k, {})
        if k not in p1 or not all(m in r for m in PHASE2):
            continue
        best = max(PHASE2, key=lambda m: mean(r[m]["runs"], "balanced"))
        fsa, none = mean(r["fsa"]["runs"], "balanced"), mean(r["none"]["runs"], "balanced")
        base = p1[k]["balanced"]
        lines.append(f"- IF {factor}: Phase I {base:.2f}; best Phase-II method `{best}` "
                     f"{mean(r[best]['runs'], 'balanced'):.2f}; FSA {fsa:.2f}, {fsa - base:+.2f} over Phase I and "
                     f"{fsa - none:+.2f} against the same balanced batches without augmentation (`none`); FSA tail "
                     f"{mean(r['fsa']['runs'], 'tail'):.2f} vs `none` {mean(r['none']['runs'], 'tail'):.2f}."
                     + (f" Of the gap from Phase I to the ceiling, FSA closes {closed(r['fsa']['runs'], base, ceiling)}"
                        f", `{best}` {closed(r[best]['runs'], base, ceiling)}." if ceiling else ""))
    for k in ("if100-ldam-drw", "if100-scl-ldam", "if100-scl-rsg-ldam"):
        if k in p1 and "if100-ce" in p1:
            fsa = runs.get(k, {}).get("fsa")
            after = f"; after FSA {mean(fsa['runs'], 'balanced'):.2f}" if fsa else ""
            lines.append(f"- `{k}`: Phase I {p1[k]['balanced']:.2f} "
                         f"({p1[k]['balanced'] - p1['if100-ce']['balanced']:+.2f} against CE){after}.")
    return ["## Reading", "", "Computed from the tables (balanced accuracy, %):", ""] + lines + [""] if lines else []


def ceilings(data: dict) -> list[str]:
    p1 = phase1(data)
    rows = [(label(name), [p1[name]]) for name in CEILINGS.values() if name in p1]
    if not rows:
        return []
    return ["## The ceiling", "", "CE on the full balanced training set (5,980 images per class once the "
            "validation images are out; same recipe, `--imbalance 1`, so no bound split), at 10 and at 30 epochs. "
            "Its *tail* is its mean per-class accuracy over the IF 100 CE store's tail classes (both from "
            "`evaluate`'s per-class accuracies), so it "
            "compares with the IF 100 tables' tail column; its *many* is every class. Every *gap closed* on this "
            "page measures to the 10-epoch ceiling unless it says otherwise.", ""] + table(rows) + [""]


# Published top-1 accuracy on CIFAR-10-LT (exponential profile, balanced test set): another
# data set, quoted for the relative gains only. Chu et al. 2020, Table 1 (ResNet-18, their
# training schedule); Cao et al. 2019 (LDAM-DRW), Table 2 (ResNet-32, top-1 error 100 - x).
PUBLISHED = [
    ("Chu et al. Table 1, ResNet-18", {"CE (baseline)": (90.73, 75.16, 70.22), "CB beta 0.9999": (89.61, 75.04, 69.21),
                                       "focal gamma 1": (90.59, 74.07, 68.23), "FSA (theirs)": (91.75, 80.57, 77.06)}),
    ("Cao et al. Table 2, ResNet-32", {"CE (ERM)": (86.39, 70.36, None), "LDAM-DRW": (88.16, 77.03, None)}),
]


def published() -> list[str]:
    out = ["## Published numbers on CIFAR-10-LT (another data set)", "",
           "For the relative gains only: CIFAR-10-LT is harder than Fashion-MNIST-LT and the papers train far "
           "longer (200 epochs). Top-1 % at IF 10 / 100 / 200.", "",
           "| source | method | IF 10 | IF 100 | IF 200 |", "| --- | --- | ---: | ---: | ---: |"]
    for source, methods in PUBLISHED:
        for method, values in methods.items():
            out.append(f"| {source} | {method} | {' | '.join('—' if v is None else f'{v:.2f}' for v in values)} |")
    return out + ["", "What they show: on CIFAR-10-LT, FSA gains +5.4 points over CE at IF 100 and +6.8 at IF 200 "
                  "in Chu et al.'s own training, while CB and focal losses do not beat CE; LDAM-DRW gains +6.7 at IF "
                  "100. Compare the relative gains in the tables above, not the absolute accuracies.", ""]


def commands(data: dict) -> list[str]:
    seeds = ", ".join(map(str, data["seeds"]))
    out = ["## Commands", ""]
    for b in BACKBONES:
        prep = data["preps"].get(b.name)
        if not prep:
            continue
        out += [f"**{b.label}** (`{b.name}`):", "", "```"] + prep["commands"]
        out += [f"{r['command']}   # S in {seeds}" for r in data["runs"].get(b.name, {}).values()]
        if b.name in data["sweeps"]:
            out.append(data["sweeps"][b.name]["command"])
        out += ["```", ""]
    return out


def missing(data: dict) -> list[str]:
    """The backbones not trained yet, each with its command and rough CPU time."""
    absent = [b for b in BACKBONES if not data["preps"].get(b.name)]
    if not absent:
        return []
    runs, total = Path(data["runs_folder"]), sum(b.minutes for b in absent)
    return ["## Not measured yet", "", "These backbones were not there when the page was written; `python "
            "benchmarks/results.py` trains them (resuming any interrupted run) and extracts their stores: about "
            f"{total // 60} h {total % 60:02d} min of CPU in all on the 2-core machine (one torch thread), then "
            "their rows join the page:", ""] + \
        [f"- {b.label} (~{b.minutes} min): `{shlex.join(['ltkit', *b.train_args(runs)])}`, then "
         f"`{shlex.join(['ltkit', *b.extract_args(runs)])}`" for b in absent] + [""]
