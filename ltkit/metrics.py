"""Accuracy by class and by many / medium / few split; top-k, calibration, retrieval.

A split's accuracy is the mean of its classes' accuracies (on a balanced test set this equals
the accuracy over the split's test images). A split with no class, or a class with no test
image, is reported as None — never as 0 %.

Everything here takes plain arrays (logits, labels, counts) so each number can be checked
against a hand-computed example; `ltkit.evaluate` feeds them from a feature store.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ltkit import choices
from ltkit.errors import ConfigError

MANY_THRESHOLD = 100  # many: more than this many training images
FEW_THRESHOLD = 20    # few: fewer than this many; medium: in between, both ends included
GROUPS = choices.GROUPS
ECE_BINS = 15         # equal-width confidence bins of the expected calibration error


def per_class_accuracy(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(K,) accuracy of each class over its test images; NaN for a class with none."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    totals = np.bincount(labels, minlength=num_classes)[:num_classes]
    hits = np.bincount(labels[preds == labels], minlength=num_classes)[:num_classes]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, hits / np.maximum(totals, 1), np.nan)


def balanced_accuracy(per_class: np.ndarray) -> float | None:
    """Mean per-class accuracy over the classes that have test images."""
    valid = per_class[~np.isnan(per_class)]
    return float(valid.mean()) if valid.size else None


def balanced_gain(hits_a: np.ndarray, hits_b: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(gain, its standard error): B's balanced accuracy minus A's on the same images, from
    their (N,) per-image hits (bool) and the (N,) labels.

    The gain is the mean over the classes with images of each class's paired difference
    d_i = hit_b,i - hit_a,i averaged over its n_k images; its standard error is the stratified
    one, sqrt(sum_k s_k^2 / n_k) / K, s_k^2 the sample variance (n_k - 1) of class k's d_i:
    the noise of drawing these particular images. A class with one image has no variance of
    its own: it takes the pooled within-class variance of the others (1 when none has two)."""
    d = np.asarray(hits_b, dtype=np.float64) - np.asarray(hits_a, dtype=np.float64)  # (N,)
    labels = np.asarray(labels)
    classes = np.unique(labels)  # (K,) the classes with images
    per_class = [d[labels == k] for k in classes]  # (n_k,) each
    pairs = [(dk.size - 1, dk.var(ddof=1)) for dk in per_class if dk.size > 1]
    pooled = sum(df * v for df, v in pairs) / sum(df for df, _ in pairs) if pairs else 1.0
    variances = [(dk.var(ddof=1) if dk.size > 1 else pooled) / dk.size for dk in per_class]
    return float(np.mean([dk.mean() for dk in per_class])), float(np.sqrt(np.sum(variances)) / len(classes))


def check_thresholds(many: int, few: int) -> None:
    """many / medium / few must not overlap: few <= many + 1 keeps medium = [few, many]."""
    if few < 0 or many < 0 or few > many + 1:
        raise ConfigError(f"--few-threshold {few} and --many-threshold {many} overlap; the few "
                          "threshold must be at most the many threshold + 1 (defaults 20 and 100)")


def split_of(train_counts: np.ndarray, many: int = MANY_THRESHOLD,
             few: int = FEW_THRESHOLD) -> np.ndarray:
    """(K,) split name of each class by its training count."""
    counts = np.asarray(train_counts)
    return np.where(counts > many, "many", np.where(counts < few, "few", "medium"))


def group_accuracies(per_class: np.ndarray, train_counts: np.ndarray, many: int = MANY_THRESHOLD,
                     few: int = FEW_THRESHOLD) -> dict[str, dict[str, Any]]:
    """{"many"|"medium"|"few": {"accuracy": float or None, "classes": int}}."""
    groups = split_of(train_counts, many, few)
    out = {}
    for name in GROUPS:
        members = per_class[groups == name]
        out[name] = {"accuracy": balanced_accuracy(members) if members.size else None,
                     "classes": int(members.size)}
    return out


def class_set_accuracy(per_class: np.ndarray, members: Iterable[int]) -> dict[str, Any]:
    """{"accuracy", "classes"} of an explicit class set (the FSA head or tail)."""
    index = np.asarray(list(members), dtype=np.int64)
    chosen = per_class[index] if index.size else per_class[:0]
    return {"accuracy": balanced_accuracy(chosen) if chosen.size else None,
            "classes": int(index.size)}


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float | None:
    """Fraction of samples whose label is among the k highest logits; None without samples."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if labels.size == 0:
        return None
    if k > logits.shape[1]:
        raise ConfigError(f"top-{k} accuracy needs at least {k} classes, got {logits.shape[1]}")
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]  # (N, k), unordered
    return float((top == labels[:, None]).any(axis=1).mean())


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)  # (N, K), numerically safe
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def calibration(logits: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict[str, Any]:
    """Expected calibration error over `bins` equal-width bins of the top softmax confidence.

    Bin b holds the samples with confidence in (b/bins, (b+1)/bins] (the first bin also 0);
    ECE = sum_b n_b / N * |accuracy_b - mean confidence_b|. Empty bins count for nothing and
    are reported with confidence / accuracy None.
    """
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    probs = softmax(logits)                                    # (N, K)
    confidence, preds = probs.max(axis=1), probs.argmax(axis=1)  # (N,), (N,)
    correct = (preds == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.searchsorted(edges[1:-1], confidence, side="left")  # (N,) bin of each sample
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=confidence, minlength=bins)
    hit_sum = np.bincount(which, weights=correct, minlength=bins)
    nonzero = count > 0
    mean_conf = np.where(nonzero, conf_sum / np.maximum(count, 1), np.nan)
    mean_acc = np.where(nonzero, hit_sum / np.maximum(count, 1), np.nan)
    total = max(int(count.sum()), 1)
    gaps = np.abs(mean_acc - mean_conf)[nonzero] * count[nonzero] / total
    return {"ece": float(gaps.sum()) if labels.size else None, "bins": bins,
            "edges": [float(e) for e in edges], "count": [int(c) for c in count],
            "confidence": nan_to_none(mean_conf), "accuracy": nan_to_none(mean_acc)}


def confusion_matrix(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class."""
    flat = np.asarray(labels) * num_classes + np.asarray(preds)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def retrieval_scores(features: torch.Tensor, labels: torch.Tensor, *,
                     budget: int = 1 << 22) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each sample as a query against all the others, by cosine similarity.

    Returns per query (N,): average precision, rank-1 hit (nearest other sample shares its
    label), and whether it has any relevant item (a class with one sample has none: its AP is
    undefined and such queries are left out of the means). Queries go `budget // N` at a time
    so the (chunk, N) similarity and sort stay bounded. Ties keep gallery order.
    """
    n = features.shape[0]
    gallery = F.normalize(features.float(), dim=1)  # (N, C)
    labels = labels.to(gallery.device)
    ranks = torch.arange(1, n + 1, device=gallery.device, dtype=torch.float64)  # (N,)
    ap, hit, valid = [], [], []
    step = max(1, budget // max(n, 1))
    for start in range(0, n, step):
        stop = min(start + step, n)
        rows = torch.arange(start, stop, device=gallery.device)             # (q,)
        sims = gallery[start:stop] @ gallery.T                               # (q, N)
        sims[rows - start, rows] = float("-inf")                             # self goes last
        order = torch.sort(sims, dim=1, descending=True, stable=True).indices  # (q, N)
        rel = (labels[order] == labels[rows, None]) & (order != rows[:, None])  # (q, N)
        rel = rel.double()
        n_rel = rel.sum(dim=1)                                               # (q,)
        precision = rel.cumsum(dim=1) / ranks                                # (q, N)
        ap.append(((precision * rel).sum(dim=1) / n_rel.clamp_min(1)).cpu())
        hit.append(rel[:, 0].bool().cpu())
        valid.append((n_rel > 0).cpu())
    if not ap:
        return np.zeros(0), np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)
    return torch.cat(ap).numpy(), torch.cat(hit).numpy(), torch.cat(valid).numpy()


def retrieval_summary(ap: np.ndarray, hit: np.ndarray, valid: np.ndarray, labels: np.ndarray,
                      train_counts: np.ndarray, many: int = MANY_THRESHOLD,
                      few: int = FEW_THRESHOLD) -> dict[str, Any]:
    """mAP and rank-1 over all valid queries and over the queries of each split's classes."""
    def means(mask: np.ndarray) -> dict[str, Any]:
        use = mask & valid
        return {"map": float(ap[use].mean()) if use.any() else None,
                "rank1": float(hit[use].mean()) if use.any() else None,
                "queries": int(use.sum())}

    groups = split_of(train_counts, many, few)
    labels = np.asarray(labels)
    out = means(np.ones_like(valid))
    out["excluded_queries"] = int((~valid).sum())
    out["splits"] = {}
    for name in GROUPS:
        members = np.flatnonzero(groups == name)
        out["splits"][name] = {**means(np.isin(labels, members)), "classes": int(members.size)}
    return out


def measure(logits: np.ndarray, labels: np.ndarray, train_counts: np.ndarray,
            class_names: list[str], *, many: int = MANY_THRESHOLD, few: int = FEW_THRESHOLD,
            ece_bins: int = ECE_BINS, head_tail: tuple[np.ndarray, np.ndarray] | None = None,
            ) -> tuple[dict[str, Any], np.ndarray]:
    """Every classification metric of `logits` (N, K) against `labels` (N,); and the confusion."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    train_counts = np.asarray(train_counts)
    k = logits.shape[1]
    preds = logits.argmax(axis=1)  # (N,)
    per_class = per_class_accuracy(preds, labels, k)
    test_counts = np.bincount(labels, minlength=k)[:k]
    groups = split_of(train_counts, many, few)
    splits = group_accuracies(per_class, train_counts, many, few)
    for name in GROUPS:
        splits[name]["samples"] = int(test_counts[groups == name].sum())
    fsa = None
    if head_tail is not None:
        fsa = {}
        for role, members in zip(("head", "tail"), head_tail):
            fsa[role] = {**class_set_accuracy(per_class, members),
                         "samples": int(test_counts[np.asarray(members, dtype=np.int64)].sum())}
    role_of = _roles(k, head_tail)
    rows = [{"index": c, "name": class_names[c], "train_count": int(train_counts[c]),
             "test_count": int(test_counts[c]), "split": str(groups[c]), "fsa": role_of[c],
             "accuracy": None if np.isnan(per_class[c]) else float(per_class[c])}
            for c in range(k)]
    metrics = {
        "samples": int(labels.size),
        "num_classes": k,
        "thresholds": {"many": many, "few": few},
        "top1": float((preds == labels).mean()) if labels.size else None,
        "top5": topk_accuracy(logits, labels, 5) if k >= 5 else None,
        "balanced_accuracy": balanced_accuracy(per_class),
        "splits": splits,
        "fsa": fsa,
        "calibration": calibration(logits, labels, ece_bins),
        "per_class": rows,
    }
    return metrics, confusion_matrix(preds, labels, k)


def _roles(k: int, head_tail: tuple[np.ndarray, np.ndarray] | None) -> list[str | None]:
    roles: list[str | None] = [None] * k
    if head_tail is not None:
        for role, members in zip(("head", "tail"), head_tail):
            for c in np.asarray(members).tolist():
                roles[c] = role
    return roles


def nan_to_none(values: np.ndarray) -> list[float | None]:
    """A float array as a JSON-safe list: NaN becomes None."""
    return [None if np.isnan(v) else float(v) for v in np.asarray(values, dtype=np.float64)]
