"""``auto`` augmenter options: chosen on the validation split by the stage itself, never on test.

An option left ``auto`` (by default FSA's thresholds, mixing range and tail / head draws) is
chosen among the points of the augmenter's ``auto_grid`` (`ltkit.augment.fsa`): one
classifier per point, trained on the run's bank with the run's method and schedule, scored
by balanced accuracy on the store's validation split; the best point wins, ties to the
earlier one (the first is the fixed default of before). Options given a value keep it (grid
points that differ only in those collapse into one). An augmenter without a grid takes the
fixed values `AUTO_FIXED` for its ``auto`` options, training nothing.

The choice is made with one seed (`SELECTION_SEED`) whatever the run's seed, so every seed
of a sweep trains with the same options; and it is remembered for the process, so a sweep
pays for it once per method. Without a validation split the first point is taken, with a
warning. The points tried and their validation accuracies are recorded in the classifier
artifact (``options["auto_choice"]``).
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from ltkit import console
from ltkit.augment import AUGMENTERS, AUTO_FIXED
from ltkit.augment.bank import FeatureBank
from ltkit.classifiers import Classifier
from ltkit.finetune_config import FinetuneConfig, method_name

SELECTION_SEED = 0  # the seed of every trial run; the chosen options then serve every seed
_chosen: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}  # memo key -> (point, rows)


def grid_points(cfg: FinetuneConfig) -> list[dict[str, Any]]:
    """The distinct values of ``cfg``'s ``auto`` options over its augmenter's grid, in grid order."""
    auto = cfg.batches.auto_fields()
    grid = getattr(AUGMENTERS.get(cfg.augment), "auto_grid", ()) if auto else ()
    points: list[dict[str, Any]] = []
    for point in grid:
        chosen = {name: point[name] for name in auto}
        if chosen not in points:
            points.append(chosen)
    return points


def without_training(cfg: FinetuneConfig) -> FinetuneConfig:
    """``cfg`` with the ``auto`` options of an augmenter without a grid set to `AUTO_FIXED`."""
    auto = cfg.batches.auto_fields()
    if not auto or grid_points(cfg):
        return cfg
    return cfg.replace(**{name: AUTO_FIXED[name] for name in auto})


def choose(bank: FeatureBank, phase1: Classifier, cfg: FinetuneConfig,
           val: tuple[torch.Tensor, torch.Tensor] | None, key: str) -> tuple[FinetuneConfig, list[dict[str, Any]]]:
    """(``cfg`` with every ``auto`` option chosen, the points tried with their validation
    accuracy). ``cfg`` resolved; ``key`` names the data (store and table) for the memo."""
    from ltkit.finetune import accuracy_on, finetune_classifier

    cfg = without_training(cfg)
    points = grid_points(cfg)
    if not points:
        return cfg, []
    if val is None:
        console.warn(f"{method_name(cfg)}: no validation split to choose {', '.join(points[0])} on; "
                     f"using {_words(points[0])} (extract with validation images, or give the options)")
        return cfg.replace(**points[0]), []
    trial_cfg = cfg.replace(seed=SELECTION_SEED)
    memo = json.dumps([key, trial_cfg.to_options()], sort_keys=True, default=str)
    if memo not in _chosen:
        console.log(f"{method_name(cfg)}: choosing {', '.join(points[0])} on the validation split "
                    f"among {len(points)} settings (seed {SELECTION_SEED})")
        rows = []
        for point in points:  # a loop over configurations
            clf, _ = finetune_classifier(bank, phase1, trial_cfg.replace(**point))
            rows.append(point | {"val_acc": accuracy_on(clf, *val)})
        best = max(range(len(rows)), key=lambda i: (rows[i]["val_acc"], -i))  # ties: the earlier point
        _chosen[memo] = (points[best], rows)
    point, rows = _chosen[memo]
    console.log(f"{method_name(cfg)}: chose {_words(point)} on validation")
    return cfg.replace(**point), rows


def data_key(store_path: str, table) -> str:
    """What the memo tells data apart by: the store's path, size and change time, and the
    table's head / tail split and confusing classes."""
    st = os.stat(store_path)
    split = [] if table is None else [table.tail_classes.tolist(), table.confusing.tolist()]
    return json.dumps([str(store_path), st.st_size, st.st_mtime_ns, split])


def _words(point: dict[str, Any]) -> str:
    return ", ".join(f"{name} {value}" for name, value in point.items())
