"""`ltkit sweep`: every Phase-II method that applies to a store, over seeds, chosen on held-out data.

Recipe: input (a store: its confusing-class table is built with the defaults, in the sweep
folder; or a table; or ``-``) -> the plan (`plan`: read from the registries, so a new method
or augmenter joins by being registered) -> for each method and seed one ordinary
`augment_finetune` run and its evaluations on the selection data and on test -> the
comparison (one row per method, mean ± std over seeds) -> the method of the best mean
balanced accuracy on the selection data (ties: the simpler, earlier one), whose first seed's
classifier is the result.

Selection is nested, so that no method's own choices inflate its score (`SELECTIONS`): a
method chooses its options (tau, FSA's and H2T's ``auto``, wb's grid, ...) on validation
images the sweep never compares on. ``--select-on val``: methods tune on the validation
split's ``tune`` half, the sweep compares on its ``select`` half (`ltkit.valparts`);
``--select-on bound``: methods tune on all of val, the sweep compares on the store's bound
split (balanced, held out from training; far larger); ``auto`` (the default): bound when the
store has one, else the halves. The test split informs no choice; the chosen method's test
rank is reported after the choice.

The plan: every classifier with its own default augmenter (``--augment auto``), and every
augmenter with `PAIRED` (cRT's re-initialised head), less what `check_combination` refuses for
this store's Phase-I head and what needs feature maps the store lacks; one run name, one row.
Training-free methods come first (simplest), then the trained ones; a training-free method
runs once (seed 0: nothing in it is random), a trained one once per seed. Each method chooses
its own options on its validation images as it always does (tau-norm's and logit-adjust's
tau, FSA's ``auto`` options): the sweep adds no choice of its own but the method.

Every run is a file in ``OUT/runs/`` made by the stage that always makes it, so a rerun (or a
sweep killed half-way) reuses every finished run and evaluation and makes only the rest.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ltkit import choices, console, testhooks
from ltkit.artifacts import resolve_input
from ltkit.augment import AUGMENTERS
from ltkit.confusing import ConfusingConfig, build_table, load_table, table_store_path
from ltkit.errors import ConfigError, StaleOutput
from ltkit.evaluate import EvalConfig, evaluate
from ltkit.evaluation_json import jsonable, load_evaluation
from ltkit.finetune import augment_finetune
from ltkit.finetune_config import FinetuneConfig, method_name
from ltkit.methods import CLASSIFIERS, check_combination
from ltkit.registry import check_choice
from ltkit.sweep_results import RUNS, MethodRow, as_json, choose, csv_text, markdown, prepare_folder, verdict

PAIRED = "crt"  # every augmenter is also tried with this classifier (a fresh head: the batches alone decide)


@dataclass
class SweepConfig:
    seeds: int = 3                 # runs per trained method: seeds 0 .. seeds-1
    iterations: int | None = None  # SGD steps of every trained run; None: each method's own schedule
    device: str = "auto"           # where runs train and are measured
    select_on: str = "auto"        # val (its halves) | bound | auto: bound when the store has it, else val

    def validate(self) -> None:
        check_choice(self.select_on, choices.SELECT_ON, "--select-on")
        if self.seeds < 1:
            raise ConfigError("--seeds must be at least 1")
        if self.iterations is not None and self.iterations < 1:
            raise ConfigError("--iterations must be at least 1")


@dataclass(frozen=True)
class Selection:
    """Where methods choose their options, and where the sweep compares them: disjoint."""

    tune_part: str  # the validation images each method chooses its own options on (ltkit.valparts)
    split: str      # the split the sweep compares methods on
    part: str       # its images (a validation half, or all)
    label: str      # its name in the report and in the evaluation files
    run_tag: str    # in the runs' file names ("" for runs tuned on all of val: ordinary runs)


SELECTIONS = {"val": Selection("tune", "val", "select", "val-select", ".tune"),
              "bound": Selection("all", "bound", "all", "bound", "")}


@dataclass
class Planned:
    method: str                # the run name: fsa, class-balanced-crt, ncm, ...
    options: dict[str, Any]    # flat fine-tuning options (classifier, augment)
    trains: bool


def plan(phase1_kind: str, has_maps: bool, map_splits: frozenset[str] = frozenset(),
         needs: frozenset[str] = frozenset({"train", "val", "test"})) -> tuple[list[Planned], list[str]]:
    """(the methods to run, simplest first; why each other candidate was left out). Every head
    kind beyond the pooled one (`ltkit.heads.HEADS`: the spatial head on the maps) joins with
    `PAIRED` and its default batches when the store keeps maps for every split in ``needs``
    (training, validation, test and the selection split)."""
    from ltkit.heads import HEADS

    candidates = [{"classifier": name} for name in CLASSIFIERS.names()]
    candidates += [{"classifier": PAIRED, "augment": name} for name in AUGMENTERS.names()]
    candidates += [{"classifier": PAIRED, "head": head} for head in HEADS.names() if head != "linear"]
    planned: list[Planned] = []
    left_out: list[str] = []
    for options in candidates:
        cfg = FinetuneConfig.from_options(options)
        name, augment = method_name(cfg), cfg.augment_name()
        if any(p.method == name for p in planned):
            continue  # e.g. crt with its own default augmenter, once
        try:
            check_combination(augment, cfg.classifier, phase1_kind)
        except ConfigError as exc:
            left_out.append(f"{name}: {exc}")
            continue
        if AUGMENTERS.get(augment).needs_spatial and not has_maps:
            left_out.append(f"{name}: the store holds no training feature maps and CAMs")
            continue
        missing = sorted(needs - map_splits) if HEADS.get(cfg.head).array == "features" else []
        if missing:
            left_out.append(f"{name}: the store keeps no feature maps for {', '.join(missing)}")
            continue
        planned.append(Planned(name, options, CLASSIFIERS.get(cfg.classifier).trains))
    return sorted(planned, key=lambda p: p.trains), left_out  # stable: registry order within


def _inputs(source: str | Path) -> tuple[Path, Path | None]:
    """(store, table or None) of a sweep input: a store or a confusing-class table."""
    from ltkit.store import is_store

    src = resolve_input(source)
    if is_store(src):
        return src, None
    return table_store_path(load_table(src)), src


def _store_facts(store_path: Path, select_on: str) -> tuple[str, bool, str, dict[str, Any]]:
    """(Phase-I kind, whether the store has training maps, --select-on resolved, what the report
    records of the selection)."""
    from ltkit.classifiers import Classifier
    from ltkit.store import open_store
    from ltkit.valparts import describe

    with open_store(store_path) as st:
        if "val" not in st.splits:
            raise ConfigError(f"{store_path} has no validation split: the sweep chooses every option and the "
                              "method on it; extract with validation images (--val-per-class)")
        if select_on == "bound" and "bound" not in st.splits:
            raise ConfigError(f"--select-on bound: {store_path} has no bound split (hold one out with ltkit "
                              "train-backbone --bound-per-class N, then extract); use --select-on val")
        chosen = select_on if select_on != "auto" else ("bound" if "bound" in st.splits else "val")
        sel = SELECTIONS[chosen]
        facts = {"select_on": chosen, "methods_tune_on": f"val ({sel.tune_part})", "compared_on": sel.label,
                 "images": st.rows(sel.split)}
        if chosen == "val":
            labels = st.read("val", "labels")
            facts |= {"val_halves": describe(labels, len(st.class_names))}
            facts["images"] = sum(facts["val_halves"]["select"])
        has_maps = st.has("train", "features") and st.has("train", "cams")
        facts["map_splits"] = sorted(s for s in st.splits if st.has(s, "features"))
        return Classifier.from_store(st).kind, has_maps, chosen, facts


def _evaluation(source: Path, on: EvalConfig, out: Path, table: Path) -> dict[str, Any]:
    """The evaluation of ``source`` as ``on`` says, reused from ``out`` when that was written after
    ``source`` (else measured and written there atomically)."""
    if out.exists() and out.stat().st_mtime_ns >= source.stat().st_mtime_ns:
        result = load_evaluation(out)
        if Path(result["source"]["path"]) == source.resolve():
            return result
    result = evaluate(source, on, table=table).result
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(jsonable(result), indent=1, allow_nan=False))
    os.replace(tmp, out)
    return result


def sweep(source: str | Path, cfg: SweepConfig, *, out: str | Path | None = None, force: bool = False) -> Path:
    """``ltkit sweep``: run the plan, write the comparison into the sweep folder (default:
    ``STORE_STEM.sweep/`` beside the input) and return the chosen method's classifier path."""
    cfg.validate()
    store_path, table_path = _inputs(source)
    folder = prepare_folder(out or (table_path or store_path).parent / f"{store_path.stem}.sweep", force,
                            [p for p in (store_path, table_path) if p])
    if table_path is None:
        with console.quietly():
            table_path = build_table(store_path, ConfusingConfig(), out=folder / "table.pt")
    phase1_kind, has_maps, select_on, facts = _store_facts(store_path, cfg.select_on)
    sel = SELECTIONS[select_on]
    planned, left_out = plan(phase1_kind, has_maps, frozenset(facts["map_splits"]),
                             frozenset({"train", "val", "test", SELECTIONS[select_on].split}))
    for reason in left_out:
        console.log(f"left out {reason}")
    rows = [MethodRow("phase1", {}, eligible=False)]
    total = 1 + sum(cfg.seeds if p.trains else 1 for p in planned)
    started = time.perf_counter()
    console.log(f"sweep: {len(planned)} methods, {total} runs with the Phase-I reference, into {folder}; "
                f"methods tune on val ({sel.tune_part}), the sweep compares them on {sel.label} "
                f"({facts['images']} images)")
    evals = {"select": EvalConfig(on=sel.split, val_part=sel.part, device=cfg.device),
             "test": EvalConfig(on="test", device=cfg.device)}
    with console.progress(total, "sweep", unit="run") as bar:
        for what, on in evals.items():
            getattr(rows[0], what).append(_evaluation(store_path, on, folder / RUNS / f"phase1.{_label(on)}.json",
                                                      table_path))
        rows[0].classifiers.append(str(store_path))
        bar.advance(1, method="phase1")
        for p in planned:
            row = MethodRow(p.method, p.options, eligible=p.options.get("train_on", "train") != sel.split)
            start = time.perf_counter()
            try:
                for seed in range(cfg.seeds if p.trains else 1):
                    _one_run(p, seed, cfg, folder / RUNS / f"{p.method}{sel.run_tag}.seed{seed}", table_path, row,
                             sel, evals)
                    bar.advance(1, method=p.method)
                    testhooks.pause_at("sweep-run", sum(len(r.select) for r in rows) + len(row.select))
            except ConfigError as exc:  # the method cannot work on this data (e.g. 1x1 maps for fsa)
                console.warn(f"left out {p.method}: {exc}")
                continue
            row.seconds = time.perf_counter() - start
            rows.append(row)
            s = row.summary()
            console.log(f"{p.method}: {len(row.select)} run(s) in {row.seconds:.1f} s; {sel.label} balanced "
                        f"{100 * s['select_balanced']['mean']:.2f} ± {100 * s['select_balanced']['std']:.2f} %")
    if len(rows) < 2:
        raise ConfigError("no Phase-II method applies to this store (see the lines above)")
    chosen = choose(rows)
    meta = {"store": str(store_path), "table": str(table_path), "seeds": list(range(cfg.seeds)),
            "iterations": cfg.iterations, "selection": facts, "left_out": left_out,
            "seconds": time.perf_counter() - started}
    _write(folder, rows, chosen, meta, sel.label)
    console.log(f"sweep: {len(rows) - 1} methods in {meta['seconds']:.0f} s. " + verdict(rows, chosen, sel.label)
                .replace("**", "") + f" (table in {folder / 'sweep.md'})")
    return Path(chosen.classifiers[0])


def _label(on: EvalConfig) -> str:
    """An evaluation's name in file names: test, bound, val, val-select, ..."""
    return on.on if on.val_part == "all" else f"{on.on}-{on.val_part}"


def _one_run(p: Planned, seed: int, cfg: SweepConfig, base: Path, table_path: Path, row: MethodRow,
             sel: Selection, evals: dict[str, EvalConfig]) -> None:
    """One seed of one method, tuned on ``sel.tune_part`` of val: its classifier and its evaluations
    on the selection data and on test (each reused when done)."""
    options = p.options | {"seed": seed, "device": cfg.device, "val_part": sel.tune_part}
    if p.trains and cfg.iterations:
        options["iterations"] = cfg.iterations
    with console.quietly():
        clf = _finetune(table_path, FinetuneConfig.from_options(options), base.with_name(base.name + ".pt"))
        row.classifiers.append(str(clf))
        for what, on in evals.items():
            getattr(row, what).append(_evaluation(clf, on, base.with_name(f"{base.name}.{_label(on)}.json"),
                                                  table_path))


def _finetune(table_path: Path, fc: FinetuneConfig, out: Path) -> Path:
    """The run in the sweep's own folder: reused when it is this very run; one made otherwise
    (with a default changed since) is the sweep's own, so it is made again."""
    try:
        return augment_finetune(table_path, fc, out=out)
    except StaleOutput as exc:
        console.warn(f"the sweep makes its run {out.name} again ({exc})")
        return augment_finetune(table_path, fc, out=out, force=True)


def _write(folder: Path, rows: list[MethodRow], chosen: MethodRow, meta: dict[str, Any], label: str) -> None:
    texts = {"sweep.md": markdown(rows, chosen, label) + "\n", "sweep.csv": csv_text(rows, chosen) + "\n",
             "sweep.json": json.dumps(as_json(rows, chosen, meta), indent=1, allow_nan=False) + "\n"}
    for name, text in texts.items():
        tmp = folder / RUNS / f"{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, folder / name)
