"""`ltkit evaluate`: run a classifier on a store's pooled features and measure it.

The input is a feature store (its Phase-I classifier is measured) or a classifier artifact
(its store is found through its lineage, or given with ``store``). Nothing here needs the
backbone: every classifier maps stored pooled features ``(N, C)`` to logits ``(N, K)``.
The result is one JSON-ready dict whose keys are documented in ``docs/evaluate.md``;
`ltkit.metrics.measure` computes its metrics from plain arrays, `evaluate` feeds it a store;
`ltkit.evaluation_json` owns the JSON's format and reads it back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ltkit import __version__, choices, console
from ltkit.artifacts import resolve_input
from ltkit.classifiers import TAU_GRID, Classifier, load_classifier, pick_tau
from ltkit.device import resolve_device
from ltkit.errors import ArtifactError, ConfigError, DataError, LtkitError
from ltkit.evaluation_json import FORMAT, FORMAT_VERSION, jsonable
from ltkit.heads import head_of, missing_maps, split_logits
from ltkit.lineage import Parent, identity_diff, parent, parent_change, store_identity
from ltkit.metrics import (
    ECE_BINS,
    FEW_THRESHOLD,
    MANY_THRESHOLD,
    check_thresholds,
    measure,
    retrieval_scores,
    retrieval_summary,
)
from ltkit.valparts import part_rows, val_features

EVAL_SPLITS = choices.EVAL_SPLITS
MAX_ECE_BINS = 1000


@dataclass
class EvalConfig:
    on: str = "test"                     # split measured: test | val | bound
    val_part: str = "all"                # with on = val: all of it, or a half (tune | select: ltkit.valparts)
    tau: float | str | None = None       # post-hoc tau-normalisation: None, an exponent, "auto"
    tau_grid: tuple[float, ...] = TAU_GRID  # exponents "auto" tries on val (balanced accuracy)
    many_threshold: int = MANY_THRESHOLD  # many: more training images than this
    few_threshold: int = FEW_THRESHOLD    # few: fewer than this; medium: between, ends included
    ece_bins: int = ECE_BINS             # equal-width confidence bins of the calibration error
    retrieval: bool = False              # also mAP / rank-1 of pooled test features as queries
    device: str = "auto"                 # where logits and retrieval similarities are computed
    chunk_rows: int = 8192               # pooled rows read and classified at a time

    def validate(self) -> None:
        if self.on not in EVAL_SPLITS:
            raise ConfigError(f"--split {self.on!r}: valid splits are {', '.join(EVAL_SPLITS)}")
        if self.val_part not in choices.VAL_PARTS:
            raise ConfigError(f"--val-part {self.val_part!r}: valid parts are {', '.join(choices.VAL_PARTS)}")
        if self.val_part != "all" and self.on != "val":
            raise ConfigError(f"--val-part {self.val_part} measures part of the validation split; add --split val")
        if isinstance(self.tau, str) and self.tau != "auto":
            raise ConfigError(f"--tau {self.tau!r}: give a number (e.g. 1.0) or 'auto'")
        if isinstance(self.tau, (int, float)) and not (math.isfinite(self.tau) and self.tau >= 0):
            raise ConfigError(f"--tau {self.tau}: the exponent must be a finite number >= 0")
        if not self.tau_grid or any(not (math.isfinite(t) and t >= 0) for t in self.tau_grid):
            raise ConfigError("the tau grid must hold at least one finite exponent >= 0")
        check_thresholds(self.many_threshold, self.few_threshold)
        if self.ece_bins < 1 or self.chunk_rows < 1:
            raise ConfigError("--ece-bins and the chunk size must be at least 1")
        if self.ece_bins > MAX_ECE_BINS:
            raise ConfigError(f"--ece-bins {self.ece_bins}: at most {MAX_ECE_BINS} bins (each is a row of "
                              "the JSON; a few tens is what calibration plots use)")


@dataclass
class Evaluation:
    result: dict[str, Any]     # the JSON object printed on stdout (docs/evaluate.md)
    confusion: np.ndarray      # (K, K) counts, row = true class, column = predicted class


def artifact_kind(path: Path) -> str:
    """"store" (HDF5), "json" (an evaluation) or "torch" (a classifier or other torch file)."""
    if not path.is_file():
        raise ArtifactError(f"{path} is not a file; give a classifier artifact, a feature store "
                            "or an evaluation JSON")
    from ltkit.store import is_store

    if is_store(path):
        return "store"
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head[:1] in (b"{", b"[") or path.suffix == ".json":
        return "json"
    return "torch"


def evaluate(source: str | Path, config: EvalConfig, *, store: str | Path | None = None,
             table: str | Path | None = None, force: bool = False,
             bound: str | Path | None = None) -> Evaluation:
    """Measure a store's Phase-I classifier, or a classifier artifact, on `config.on`.

    ``store``: the store to use instead of the classifier's lineage (it must be one made by
    the same backbone, with the same classes: else refused, or with ``force`` a warning);
    ``table``: the confusing-class table for the FSA head / tail split, instead of the lineage's;
    ``bound``: the same head trained on the store's bound split (`ltkit.bound`): adds a
    ``bound`` section with the classifier gap closed."""
    from ltkit.store import open_store

    config.validate()
    path = resolve_input(source).resolve()
    input_kind = artifact_kind(path)
    if input_kind == "json":
        raise ConfigError(f"{path} is JSON; evaluate takes a classifier artifact or a feature "
                          "store (compare takes evaluation JSONs)")
    clf, run, identity = _load_source(path, input_kind, store, table)
    device = resolve_device(config.device)
    with open_store(run["store"]["path"]) as st:
        if config.on not in st.splits:
            raise DataError(f"the store {st.path} has no {config.on!r} split "
                            f"(it has {', '.join(st.splits)}); choose --split from those")
        if clf is None:  # the store itself: its Phase-I classifier and the options that made it
            clf = Classifier.from_store(st)
            run["options"] = {"arch": st.attrs.get("arch"), "head": st.attrs.get("head"),
                              "backbone": Path(str(st.attrs.get("backbone_path", ""))).name}
        _check_fits(clf, st, config.on)
        if run["store"]["via"] == "option" and run["source"]["kind"] == "classifier":
            _check_store_identity(st, identity, force)
        head_tail = _head_tail(run, st)
        kind = clf.kind  # before tau-normalisation, which makes any linear / LWS one linear
        clf, tau_info = _apply_tau(clf, st, config, device)
        logits, labels = _logits(clf, st, config.on, config.chunk_rows, device)
        if config.on == "val" and config.val_part != "all":
            rows = part_rows(labels, config.val_part)
            logits, labels = logits[rows], labels[rows]
        result, confusion = measure(logits, labels, np.asarray(st.train_counts),
                                    list(st.class_names), many=config.many_threshold,
                                    few=config.few_threshold, ece_bins=config.ece_bins,
                                    head_tail=head_tail)
        retrieval = _retrieval(st, config, device) if config.retrieval else None
        if bound is not None:
            from ltkit.bound import bound_section

            result["bound"] = bound_section(bound, st, config.on, device, clf, result["balanced_accuracy"])
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, **run,
              "classifier": {"kind": kind, "head": getattr(clf, "head", "linear"),
                             "tau": None if tau_info is None else tau_info["value"]},
              "tau": tau_info, "on": config.on} | ({"val_part": config.val_part} if config.val_part != "all" else {})
    result = {**header, **result, "retrieval": retrieval, "ltkit_version": __version__}
    return Evaluation(jsonable(result), confusion)


def _load_source(path: Path, kind: str, store: str | Path | None, table: str | Path | None
                 ) -> tuple[Classifier | None, dict, dict | None]:
    """The classifier to measure (None: the store's own), the run's description, and the
    identity of the store the classifier was made from (None: not known)."""
    if kind == "store":
        if store is not None:
            raise ConfigError("--store is for a classifier input; the input is already a store")
        return None, {"source": {"path": str(path), "kind": "store"},
                      "store": {"path": str(path), "sha256": None, "via": "input"},
                      "table": _table_ref(None, table), "method": "phase1", "options": {}}, None
    clf, meta = load_classifier(path)
    lineage = meta.get("lineage") or {}
    recorded = parent(lineage, "store", owner=path)
    if store is not None:
        ref = {"path": str(resolve_input(store).resolve()), "sha256": None, "via": "option"}
    elif recorded is not None:
        change = parent_change(recorded)  # gone, or another content: refused, --store to override
        if change:
            raise ArtifactError(f"the classifier {path.name}: {change}; pass the store with --store "
                                "to use it anyway")
        ref = {"path": str(recorded.path), "sha256": recorded.sha256, "via": "lineage"}
    else:
        raise ArtifactError(f"{path} names no store in its lineage; give it with --store")
    identity = lineage.get("store_identity")
    if identity is None and store is not None and recorded is not None:
        identity = _identity_of(recorded.path)
    return clf, {"source": {"path": str(path), "kind": "classifier"}, "store": ref,
                 "table": _table_ref(parent(lineage, "table", owner=path), table),
                 "method": meta.get("method", "unknown"), "options": meta.get("options") or {}}, identity


def _identity_of(path: Path) -> dict | None:
    """The identity of the store at ``path``, when it is still there and readable (an old
    classifier records none of its own)."""
    from ltkit.store import open_store

    if not path.is_file():
        return None
    try:
        with open_store(path) as st:
            return store_identity(st)
    except LtkitError:
        return None


def _check_store_identity(st, recorded: dict | None, force: bool) -> None:
    """A store given with --store must be one of the same backbone and classes as the store the
    classifier was made from: refused when not (or, with ``force``, a warning)."""
    if recorded is None:
        console.warn(f"the classifier records no store to check {st.path} against; its numbers are "
                     "only meaningful if the classifier was made from a store of the same backbone")
        return
    differs = identity_diff(recorded, store_identity(st))
    if not differs:
        return
    what = (f"the store {st.path} is not like the one the classifier was made from: its "
            f"{', '.join(differs)} {'differs' if len(differs) == 1 else 'differ'}")
    if not force:
        raise ArtifactError(f"{what}; give the classifier's own store, or pass --force to evaluate on this one anyway")
    console.warn(f"{what}; evaluating anyway (--force): the numbers may mean nothing")


def _table_ref(recorded: Parent | None, table: str | Path | None) -> dict | None:
    if table is not None:
        return {"path": str(resolve_input(table).resolve()), "sha256": None, "via": "option"}
    if recorded is None:
        return None
    return {"path": str(recorded.path), "sha256": recorded.sha256, "via": "lineage"}


def _check_fits(clf, st, split: str) -> None:
    array = head_of(clf).array
    if not st.has(split, array):
        raise DataError(missing_maps(st, split))
    k, c = len(st.class_names), st.shape(split, array)[1]
    if clf.num_classes != k or clf.feature_dim != c:
        raise ArtifactError(f"the classifier maps {clf.feature_dim} features to {clf.num_classes} "
                            f"classes but the store {st.path} has {c} features and {k} "
                            "classes; give the store it was made from with --store")


def _head_tail(run: dict, st) -> tuple[np.ndarray, np.ndarray] | None:
    """The FSA head / tail classes from the confusing-class table, when there is one."""
    ref = run["table"]
    if ref is None:
        return None
    from ltkit.confusing_table import load_table

    change = parent_change(Parent("table", Path(ref["path"]), ref["sha256"] if ref["via"] == "lineage" else None))
    if change:  # gone, or (from the lineage) another content
        raise ArtifactError(f"the classifier's confusing-class table: {change}; pass one with --table "
                            "to use it anyway")
    table = load_table(ref["path"])
    if len(table.class_names) != len(st.class_names):
        raise ArtifactError(f"the table {ref['path']} is for {len(table.class_names)} classes, "
                            f"the store has {len(st.class_names)}; give the matching table with --table")
    table.check_store(st)
    return np.asarray(table.head_classes, dtype=np.int64), np.asarray(table.tail_classes, dtype=np.int64)


def _logits(clf, st, split: str, chunk_rows: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    return split_logits(clf, st, split, device, chunk_rows)


def _apply_tau(clf: Classifier, st, config: EvalConfig, device: torch.device):
    """The classifier to measure and what tau did ({value, mode, ...}, or None)."""
    if config.tau is None:
        return clf, None
    if clf.kind not in ("linear", "lws"):
        raise ConfigError(f"--tau applies to linear and LWS classifiers, not to this {clf.kind!r} "
                          "one (its weight norms do not set its logit scale); drop --tau")
    if config.tau != "auto":
        tau = float(config.tau)
        return clf.tau_normalized(tau), {"value": tau, "mode": "fixed", "selected_on": None,
                                         "grid": None, "val_balanced_accuracy": None}
    if "val" not in st.splits:
        raise DataError(f"--tau auto chooses tau on the validation split, and the store {st.path} "
                        "has none; re-extract from a backbone trained with --val-per-class > 0, "
                        "or give --tau a number")
    if config.on == "val":
        console.warn("--tau auto chose tau on val and --split val measures on val too: the numbers "
                     "are optimistic; use --split test to report")
    pooled, labels = val_features(st, device)  # (N, C), (N,): every image of the split
    tau, scores = pick_tau(clf, [pooled], labels.cpu().numpy(), config.tau_grid)
    if tau is None:
        raise DataError(f"the store {st.path} has an empty validation split; --tau auto needs "
                        "validation images, or give --tau a number")
    best = config.tau_grid.index(tau)
    console.log(f"tau auto: picked tau = {tau:g} (balanced accuracy on val {scores[best]:.4f})")
    info = {"value": tau, "mode": "auto", "selected_on": "val",
            "grid": [float(t) for t in config.tau_grid], "val_balanced_accuracy": scores}
    return clf.tau_normalized(tau), info


def _retrieval(st, config: EvalConfig, device: torch.device) -> dict[str, Any]:
    """mAP / rank-1 of the split's pooled features as queries against the rest of the split."""
    feats = torch.from_numpy(np.asarray(st.read(config.on, "pooled"))).to(device)  # (N, C)
    labels = torch.from_numpy(np.asarray(st.read(config.on, "labels"), dtype=np.int64))  # (N,)
    ap, hit, valid = retrieval_scores(feats, labels)
    out = retrieval_summary(ap, hit, valid, labels.numpy(), np.asarray(st.train_counts),
                            config.many_threshold, config.few_threshold)
    return {"similarity": "cosine", **out}
