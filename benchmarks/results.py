"""Accuracy on the real Fashion-MNIST-LT: every row of docs/results.md, regenerated.

One backbone recipe for every row (LDAM's ResNet-32, batch 128, SGD lr 0.1 with cosine decay,
seed 0, exponential profile, a 500-image-per-class bound split; `results_plan` lists each
backbone's exact commands); what changes is the Phase-I loss or recipe, the schedule, the
imbalance factor, or the Phase-II method. Each row's ltkit commands are run through the CLI
(`results_run`) and written into the page (`results_render`, `results_sections`). Artifacts
already there are reused (every stage says so), so a rerun after an interruption only does what
is missing; a backbone not trained yet is trained (minutes to hours each on a CPU: the page
lists them) unless --no-train, in which case the page lists it as missing with its command.

    python benchmarks/results.py                    # train what is missing, then the page
    python benchmarks/results.py --no-train         # only what can be made from finished backbones
    python benchmarks/results.py --seeds 0 1 2 --runs runs/results --out docs/results.md
    python benchmarks/results.py --no-train --seeds 0 --skip sweep recipes   # a quick page
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ltkit.bound import gap_closed
from results_plan import BACKBONES, PHASE2, SECTIONS, runs_of, sweeps_of
from results_render import mean, mean_std, share
from results_run import ROOT, log, method_runs, prepare, swept, with_twins
from results_sections import render

README_START, README_END = "<!-- results: start (written by benchmarks/results.py) -->", "<!-- results: end -->"
HEADLINE = (("phase1", "Phase I (CE)"), ("crt", "cRT"), ("none", "balanced fine-tuning, no augmentation"),
            ("fsa", "FSA (Chu et al., Algorithm 1)"))


def update_readme(data: dict, readme: Path) -> None:
    """The README's headline table (IF 100, CE backbone), between its markers: Phase I, cRT,
    FSA, the sweep's pick and the ceilings, each with the share of the gap it closes."""
    text = readme.read_text()
    prep, runs = data["preps"].get("if100-ce"), data["runs"].get("if100-ce", {})
    if README_START not in text or README_END not in text or not prep or not all(m in runs for m in PHASE2):
        return
    p1 = {k: v["phase1"] for k, v in data["preps"].items() if v}
    ceiling = p1.get("full-ce", {}).get("balanced")
    rows = ["| method | overall % | tail % | gap closed |", "| --- | ---: | ---: | ---: |"]

    def row(name: str, figs: list[dict]) -> None:
        closed = gap_closed(mean(figs, "balanced"), prep["phase1"]["balanced"], ceiling)
        rows.append(f"| {name} | {mean_std(figs, 'overall')} | {mean_std(figs, 'tail')} | "
                    f"{share(None if closed is None else 100 * closed)} |")

    for key, name in HEADLINE:
        row(name, [prep["phase1"]] if key == "phase1" else runs[key]["runs"])
    if "if100-ce" in data["sweeps"]:
        sweep = data["sweeps"]["if100-ce"]
        row(f"`ltkit sweep`'s pick ({sweep['chosen']})", [sweep["pick"]])
    for name, epochs in (("full-ce", 10), ("full-ce-30ep", 30)):
        if name in p1:
            row(f"ceiling: CE on the full balanced set, {epochs} epochs", [p1[name]])
    head, rest = text.split(README_START, 1)
    readme.write_text(head + README_START + "\n" + "\n".join(rows) + "\n" + README_END + rest.split(README_END, 1)[1])


def measure(args: argparse.Namespace, page: Path) -> dict:
    """Run every section's commands (reusing what is done), timed per section; after each, the
    page holds what is measured so far (the sections still to come said to be left out) and
    ``results.json`` every figure, so nothing is lost if a later section fails."""
    runs, seeds = Path(args.runs), args.seeds
    todo = [s for s in SECTIONS if s not in args.skip]
    data = {"seeds": seeds, "runs_folder": str(runs), "skipped": list(SECTIONS), "preps": {}, "runs": {},
            "sweeps": {}, "seconds": {}}
    start = time.time()
    data["preps"] = {b.name: prepare(b, runs, args.train) for b in BACKBONES}
    data["seconds"]["backbones"] = time.time() - start
    done = {k: v for k, v in data["preps"].items() if v}
    for i, section in enumerate(todo):
        start = time.time()
        for name, keys in runs_of(section).items():
            for key in with_twins(keys, done[name]) if name in done else ():
                if key not in data["runs"].setdefault(name, {}):
                    data["runs"][name][key] = method_runs(done[name], key, seeds)
        for name in sweeps_of(section):
            if name in done and name not in data["sweeps"]:
                data["sweeps"][name] = swept(done[name], seeds)
        data["seconds"][section] = time.time() - start
        data["skipped"] = [s for s in SECTIONS if s not in todo[:i + 1]]
        log(f"results: section {section} in {data['seconds'][section]:.0f} s")
        (runs / "results.json").write_text(json.dumps(data, indent=1))
        page.write_text(render(data))
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/results", help="artifact folder (git-ignored)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Phase-II seeds: 0 1 ... N-1")
    parser.add_argument("--out", default="docs/results.md", help="the page to write")
    parser.add_argument("--no-train", dest="train", action="store_false", help="use finished backbones only")
    parser.add_argument("--skip", nargs="+", default=[], choices=SECTIONS, help="sections to leave out")
    args = parser.parse_args(argv)
    if args.seeds != list(range(len(args.seeds))):
        parser.error(f"--seeds must be 0 1 ... N-1 (the sweep runs seeds 0..N-1), not {' '.join(map(str, args.seeds))}")
    os.chdir(ROOT)  # every path below, and in the page's commands, is relative to the repository
    Path(args.runs).mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    try:
        data = measure(args, out)
    except RuntimeError as exc:  # one ltkit command failed: its command and its own error, no traceback
        log(f"error: {exc}")
        return 1
    out.write_text(render(data))
    if out.resolve() == (ROOT / "docs" / "results.md").resolve() and not args.skip:
        update_readme(data, ROOT / "README.md")  # the headline quotes the repository's page only
    print(out.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
