"""A Phase-II classifier scored on the store's validation split: the only split a stage
chooses options or reports progress on (the test split is measured once, by evaluate). Its
images, or a half of them (``cfg.val_part``), are read by `ltkit.valparts.val_features`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ltkit.errors import ConfigError
from ltkit.heads import SCORE_ROWS, accuracy_on, head_of
from ltkit.metrics import balanced_accuracy, group_accuracies, per_class_accuracy
from ltkit.valparts import val_features


def val_accuracy(store, clf, device: torch.device | str = "cpu", part: str = "all") -> float:
    """Mean per-class accuracy of ``clf`` on the store's validation split, or one of its halves
    (``part``: `ltkit.valparts`); ``store`` an open store or a path."""
    if isinstance(store, (str, Path)):
        from ltkit.store import open_store

        with open_store(store) as st:
            return val_accuracy(st, clf, device, part)
    if "val" not in store.splits:
        raise ConfigError(f"{store.path} has no validation split; extract with val images "
                          "(--val-per-class) to choose options without the test set")
    return accuracy_on(clf, *val_features(store, device, head_of(clf).array, part))


@torch.no_grad()
def val_metrics(clf, val: tuple[torch.Tensor, torch.Tensor], train_counts) -> dict[str, Any]:
    """Balanced and many / medium / few accuracy on the validation split ``val`` (its inputs,
    pooled or maps as the head takes them, and labels), groups by ``train_counts`` (K,)."""
    inputs, labels = val  # (N, ...), (N,)
    clf = clf.to(inputs.device)
    preds = torch.cat([clf(part).argmax(1) for part in inputs.split(SCORE_ROWS)])  # (N,)
    per_class = per_class_accuracy(preds.cpu().numpy(), labels.cpu().numpy(), clf.num_classes)  # (K,)
    return {"balanced_acc": balanced_accuracy(per_class),
            "groups": group_accuracies(per_class, np.asarray(train_counts))}
