"""``auto`` options: chosen on the validation split by the stage itself, never on test.

An option left ``auto`` (by default FSA's thresholds, mixing range and tail / head draws,
H2T's fusion ratio, and a method's own options such as wb's weight decay and MaxNorm
radius) is chosen among the points of the augmenter's ``auto_grid`` (`ltkit.augment.fsa`)
times those of the method's ``val_grid`` (`ltkit.methods`): one classifier per point, trained
on the run's bank with the run's method and schedule, scored by balanced accuracy on the
validation images the stage reads (all of val, or the tune half a sweep asks for:
`ltkit.valparts`; never test, never the images a sweep then compares methods on). Options
given a value keep it (grid points that differ only in those collapse into one). An
augmenter without a grid takes the fixed values `AUTO_FIXED` for the ``auto`` options its
grid does not set, training nothing.

Which point wins (`pick`):
- a grid without an off point (H2T's, the methods' own): the best, ties to the earlier one
  (the first is the fixed default of before);
- a grid with off points (FSA's: a point naming another augmenter, ``"augment": "none"``, the
  same balanced batches with nothing synthesised): a one-standard-error rule corrected for
  the number of points tried. The best off point is the reference; each augmenting point's
  gain over it on validation has a standard error, paired per validation image and
  stratified by class (`ltkit.metrics.balanced_gain`); a point beats the reference when its
  gain exceeds `one_se_quantile` (m) standard errors, m the augmenting points tried (1 for
  one point, 2.00 for FSA's 7: one SE's level shared among them). The best of the points
  that beat it wins; none does: the reference. Augmenting has to beat the noise of the
  images it is scored on; a run whose augmenting cannot be told from noise trains without
  it (its recorded ``augment`` is then ``none``).

The choice is made with one seed (`SELECTION_SEED`) whatever the run's seed, so every seed
of a sweep trains with the same options; and it is remembered for the process, so a sweep
pays for it once per method. Without a validation split the first augmenting point is taken
(never FSA's off point: there is nothing to measure a gain against), with a warning. The
points tried, their validation accuracies and (with an off point) each one's gain over the
reference and its standard error are recorded in the classifier artifact
(``options["auto_choice"]``).
"""

from __future__ import annotations

import itertools
import json
import os
from statistics import NormalDist
from typing import Any

import numpy as np
import torch

from ltkit import console
from ltkit.augment import AUGMENTERS, AUTO, AUTO_FIXED
from ltkit.augment.bank import FeatureBank
from ltkit.classifiers import Classifier
from ltkit.finetune_config import FinetuneConfig, method_name
from ltkit.heads import predictions_on
from ltkit.methods import CLASSIFIERS
from ltkit.metrics import balanced_accuracy, balanced_gain, per_class_accuracy

SELECTION_SEED = 0  # the seed of every trial run; the chosen options then serve every seed
_chosen: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}  # memo key -> (point, rows)


def grid_points(cfg: FinetuneConfig) -> list[dict[str, Any]]:
    """The distinct values of ``cfg``'s ``auto`` options over its augmenter's grid, in grid
    order, times those of its method's ``val_grid`` (method options left ``auto``)."""
    auto = [name for name in cfg.batches.auto_fields() if name in _gridded(cfg)]
    grid = getattr(AUGMENTERS.get(cfg.augment), "auto_grid", ()) if auto else ()
    points: list[dict[str, Any]] = []
    for point in grid:
        chosen = {name: point[name] for name in ("augment", *auto) if name in point}  # an off point stays one
        if chosen not in points:
            points.append(chosen)
    method = CLASSIFIERS.get(cfg.classifier)
    names = [name for name in method.val_grid if cfg.method_options.get(name) == AUTO]
    if not names:
        return points
    own = [dict(zip(names, values)) for values in itertools.product(*(method.val_grid[n] for n in names))]
    return [a | b for a in (points or [{}]) for b in own]


def _gridded(cfg: FinetuneConfig) -> set[str]:
    """The AugmentConfig fields the augmenter's grid sets."""
    return {name for point in getattr(AUGMENTERS.get(cfg.augment), "auto_grid", ()) for name in point}


def at_point(cfg: FinetuneConfig, point: dict[str, Any]) -> FinetuneConfig:
    """``cfg`` with a grid point's values: method options into ``method_options``, the rest by name."""
    method = CLASSIFIERS.get(cfg.classifier)
    own = {k: v for k, v in point.items() if k in method.options}
    rest = {k: v for k, v in point.items() if k not in own}
    return cfg.replace(**rest, **({"method_options": cfg.method_options | own} if own else {}))


def without_training(cfg: FinetuneConfig) -> FinetuneConfig:
    """``cfg`` with the ``auto`` options its augmenter's grid does not set fixed to `AUTO_FIXED`."""
    fixed = {name: AUTO_FIXED[name] for name in cfg.batches.auto_fields() if name not in _gridded(cfg)}
    return cfg.replace(**fixed) if fixed else cfg


def choose(bank: FeatureBank, phase1: Classifier, cfg: FinetuneConfig,
           val: tuple[torch.Tensor, torch.Tensor] | None, key: str) -> tuple[FinetuneConfig, list[dict[str, Any]]]:
    """(``cfg`` with every ``auto`` option chosen, the points tried with their validation
    accuracy). ``cfg`` resolved; ``key`` names the data (store and table) for the memo."""
    from ltkit.finetune import finetune_classifier

    cfg = without_training(cfg)
    points = grid_points(cfg)
    if not points:
        return cfg, []
    if val is None:  # nothing to compare with: the first augmenting point, as asked
        first = next(point for point in points if "augment" not in point)
        console.warn(f"{method_name(cfg)}: no validation split to choose {', '.join(auto_names(cfg))} on; "
                     f"using {_words(first)} (extract with validation images, or give the options)")
        return at_point(cfg, first), []
    trial_cfg = cfg.replace(seed=SELECTION_SEED)
    memo = json.dumps([key, trial_cfg.to_options()], sort_keys=True, default=str)
    if memo not in _chosen:
        console.log(f"{method_name(cfg)}: choosing {', '.join(auto_names(cfg))} on the validation split "
                    f"among {len(points)} settings (seed {SELECTION_SEED})")
        labels = val[1].cpu().numpy()  # (N,)
        rows, hits = [], []
        for point in points:  # a loop over configurations
            clf, _ = finetune_classifier(bank, phase1, at_point(trial_cfg, point))
            preds = predictions_on(clf, val[0]).cpu().numpy()  # (N,)
            hits.append(preds == labels)
            rows.append(point | {"val_acc": balanced_accuracy(per_class_accuracy(preds, labels, clf.num_classes))})
        _chosen[memo] = (points[pick(rows, hits, labels)], rows)
    point, rows = _chosen[memo]
    console.log(f"{method_name(cfg)}: chose {_words(point)} on validation{_why(point, rows)}")
    return at_point(cfg, point), rows


def pick(rows: list[dict[str, Any]], hits: list[np.ndarray], labels: np.ndarray) -> int:
    """The index of the winning point (the module's rule) among ``rows`` (each a point with its
    ``val_acc``) of a grid, given each point's (N,) per-image hits on the (N,) validation
    ``labels``. With off points, every other row gets ``gain`` (over the reference, the best
    off point), ``se`` (its standard error) and ``margin`` (the gain it has to exceed) recorded."""
    def best(candidates) -> int:
        return max(candidates, key=lambda i: (rows[i]["val_acc"], -i))  # ties: the earlier point

    off = [i for i, row in enumerate(rows) if "augment" in row]
    if not off:
        return best(range(len(rows)))
    reference, z = best(off), one_se_quantile(len(rows) - len(off))
    for i, row in enumerate(rows):
        if i != reference:
            row["gain"], row["se"] = balanced_gain(hits[reference], hits[i], labels)
            row["margin"] = z * row["se"]
    beyond = [i for i in range(len(rows)) if i not in off and rows[i]["gain"] > rows[i]["margin"]]
    return best(beyond) if beyond else reference


def one_se_quantile(m: int) -> float:
    """How many standard errors an augmenting point's gain must exceed when ``m`` are tried:
    the one-standard-error rule's one-sided level, P(Z > 1) = 15.9 %, shared among the m
    (Bonferroni), so that noise alone makes any of them win no more often than one point
    alone would: 1.00 for m = 1, 2.00 for FSA's 7."""
    unit = NormalDist()
    return unit.inv_cdf(1.0 - (1.0 - unit.cdf(1.0)) / max(m, 1))


def auto_names(cfg: FinetuneConfig) -> list[str]:
    """The options ``auto`` chooses for ``cfg`` (its augmenter's and its method's)."""
    return list(dict.fromkeys(name for point in grid_points(cfg) for name in point if name != "augment"))


def data_key(store_path: str, table) -> str:
    """What the memo tells data apart by: the store's path, size and change time, and the
    table's head / tail split and confusing classes."""
    st = os.stat(store_path)
    split = [] if table is None else [table.tail_classes.tolist(), table.confusing.tolist()]
    return json.dumps([str(store_path), st.st_size, st.st_mtime_ns, split])


def _words(point: dict[str, Any]) -> str:
    words = ", ".join(f"{name} {value}" for name, value in point.items() if name != "augment")
    return f"no augmentation (--augment {point['augment']}'s batches: {words})" if "augment" in point else words


def _why(point: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Why the rule kept the off point or left it: the chosen augmenting point's gain against
    its margin, or, when off was kept, the point that came nearest to its own."""
    gains = [row for row in rows if "gain" in row and "augment" not in row]
    if not gains:
        return ""
    chosen = [row for row in gains if all(row.get(k) == v for k, v in point.items())]
    top = chosen[0] if "augment" not in point and chosen else \
        max(gains, key=lambda row: row["gain"] - row["margin"])
    verdict = "more than" if top["gain"] > top["margin"] else "not more than"
    return (f" (the {'chosen' if top in chosen else 'nearest'} augmenting point gains {100 * top['gain']:+.2f} "
            f"points over no augmentation, {verdict} its margin of {100 * top['margin']:.2f}: "
            f"{one_se_quantile(len(gains)):.2f} standard errors of {100 * top['se']:.2f})")
