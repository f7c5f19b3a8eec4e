"""Choose FSA's thresholds on the validation split, and measure Phase II on a real store.

For users (and for the every-method comparison) there is `ltkit sweep` now: every registered
method, options chosen on validation by each method, FSA's included (``auto``). This script
stays for the developers' study of FSA's threshold grid and its variants at fixed options
(each option it does not set takes the fixed default of before, `AUTO_FIXED`).

The paper gives no tau_s / tau_g. This script trains one classifier per (tau_s, tau_g) on a
grid, scores each on the store's validation split (never the test split), and then reports
the chosen configuration next to the other Phase-II methods over several seeds, on test.

    python benchmarks/phase2_sweep.py runs/fm/features.table.pt --out runs/fm/sweep.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import time
from pathlib import Path

import torch

from ltkit import console
from ltkit.augment import AUTO_FIXED
from ltkit.augment.bank import load_bank
from ltkit.classifiers import Classifier
from ltkit.confusing import load_table, table_store_path
from ltkit.finetune import FinetuneConfig, accuracy_on, finetune_classifier, split_features
from ltkit.finetune import fit as fit_classifier
from ltkit.metrics import group_accuracies, per_class_accuracy
from ltkit.store import open_store

TAU_S = (0.3, 0.5, 0.7, 0.9)
TAU_G = (0.1, 0.3, 0.5)


@torch.no_grad()
def test_metrics(clf: Classifier, test, counts, tail) -> dict:
    preds = clf(test[0]).argmax(1).numpy()
    per_class = per_class_accuracy(preds, test[1].numpy(), clf.num_classes)
    groups = group_accuracies(per_class, counts)
    return {"balanced": float(per_class.mean()), "tail": float(per_class[tail].mean()),
            **{g: v["accuracy"] for g, v in groups.items()}}


def run(table_path: str, *, seeds=(0, 1, 2), tau_s=TAU_S, tau_g=TAU_G, iterations=None,
        store_path: str | None = None) -> dict:
    console.configure(quiet=True)
    table = load_table(table_path)
    with open_store(store_path or table_store_path(table)) as store:
        return _run(store, table, table_path, seeds, tau_s, tau_g, iterations)


def _run(store, table, table_path, seeds, tau_s, tau_g, iterations) -> dict:
    cpu = torch.device("cpu")
    bank = load_bank(store, table, device=cpu, spatial=True)
    phase1 = Classifier.from_store(store)
    val, test = split_features(store, "val"), split_features(store, "test")
    counts, tail = store.train_counts, table["tail_classes"].numpy()

    def fit(**options) -> tuple[Classifier, float]:
        cfg = FinetuneConfig.from_options({"device": "cpu", **AUTO_FIXED, **options})
        cfg = cfg.resolved(bank.labels.numel(), bank.confusing.shape[1])
        if iterations:
            cfg = dataclasses.replace(cfg, iterations=iterations)
        start = time.perf_counter()
        if cfg.classifier in ("tau-norm", "ncm"):  # no training: the library's own path
            clf = fit_classifier(store, table, phase1, cfg, cpu, val)[0]
        else:
            clf, _ = finetune_classifier(bank, phase1, cfg)
        return clf, time.perf_counter() - start

    # 1. thresholds, on validation (mean over the seeds: 200 validation images are few, one
    #    seed alone ties within one image): the paper's schedule (linear) and cRT's
    sweeps = {}
    for classifier in ("linear", "crt"):
        rows = []
        for s, g in itertools.product(tau_s, tau_g):  # a loop over configurations
            vals = [accuracy_on(fit(augment="fsa", classifier=classifier, tau_s=s, tau_g=g,
                                    seed=seed)[0], *val) for seed in seeds]
            rows.append({"tau_s": s, "tau_g": g, "val": statistics.fmean(vals)})
        sweeps[classifier] = sorted(rows, key=lambda r: -r["val"])
    best = {c: sweeps[c][0] for c in sweeps}

    # 2. every method, several seeds, reported on test (chosen on validation above)
    methods = {
        "phase1": None,
        "none": {"augment": "none"},
        "fsa": {"augment": "fsa", "tau_s": best["linear"]["tau_s"], "tau_g": best["linear"]["tau_g"]},
        "fsa (0.5, 0.5)": {"augment": "fsa", "tau_s": 0.5, "tau_g": 0.5},
        "fsa, instance draws": {"augment": "fsa", "tail_draw": "instance", "head_draw": "instance"},
        "none, instance draws": {"augment": "none", "tail_draw": "instance", "head_draw": "instance"},
        "fsa, gamma >= 0.5": {"augment": "fsa", "gamma_min": 0.5, "tau_s": best["linear"]["tau_s"],
                              "tau_g": best["linear"]["tau_g"]},
        "crt": {"classifier": "crt"},
        "fsa + crt": {"augment": "fsa", "classifier": "crt", "tau_s": best["crt"]["tau_s"],
                      "tau_g": best["crt"]["tau_g"]},
        "lws": {"classifier": "lws"},
        "tau-norm": {"classifier": "tau-norm"},
        "ncm": {"classifier": "ncm"},
        "cloud": {"augment": "cloud"},
    }
    results = {}
    for name, options in methods.items():
        runs = []
        for seed in (seeds if options else (0,)):
            if options is None:
                clf, seconds = phase1, 0.0
            else:
                clf, seconds = fit(seed=seed, **options)
            runs.append(test_metrics(clf, test, counts, tail) | {"val": accuracy_on(clf, *val),
                                                                 "seconds": seconds})
        results[name] = {"options": options, "runs": runs, "mean": _mean(runs), "std": _std(runs)}
    return {"table": str(table_path), "sweeps": sweeps, "best": best, "results": results}


def _mean(runs):
    return {k: statistics.fmean(r[k] for r in runs) for k in runs[0] if runs[0][k] is not None}


def _std(runs):
    return {k: (statistics.stdev(r[k] for r in runs) if len(runs) > 1 else 0.0)
            for k in runs[0] if runs[0][k] is not None}


def markdown(out: dict) -> str:
    lines = ["| method | val % | test balanced % | many % | medium % | few % | tail % | s / run |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in out["results"].items():
        m, s = r["mean"], r["std"]
        cell = lambda k: f"{100 * m[k]:.2f} ± {100 * s[k]:.2f}" if k in m else "—"  # noqa: E731
        lines.append(f"| {name} | {cell('val')} | {cell('balanced')} | {cell('many')} | "
                     f"{cell('medium')} | {cell('few')} | {cell('tail')} | {m['seconds']:.1f} |")
    for clf, rows in out["sweeps"].items():
        lines += ["", f"FSA thresholds on validation ({clf}):", "",
                  "| tau_s \\ tau_g | " + " | ".join(str(g) for g in TAU_G) + " |",
                  "| --- |" + " ---: |" * len(TAU_G)]
        for s in TAU_S:
            vals = {r["tau_g"]: r["val"] for r in rows if r["tau_s"] == s}
            lines.append(f"| {s} | " + " | ".join(f"{100 * vals[g]:.2f}" for g in TAU_G) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", help="confusing-class table of the store to measure")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--store", help="the store to use instead of the table's (same backbone, e.g. with views)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = run(args.table, seeds=tuple(range(args.seeds)), store_path=args.store)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))
    print(markdown(out))


if __name__ == "__main__":
    main()
