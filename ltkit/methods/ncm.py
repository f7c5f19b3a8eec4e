"""``ncm``: nearest class mean, no training: the class means of the stored training features
(of all drawn views), streamed in chunks; cosine (means of L2-normalised features) or squared
L2 (``ncm_metric``)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ltkit.augment.bank import VIEWS_SPLIT
from ltkit.classifiers import Classifier
from ltkit.methods import CLASSIFIERS, FitInputs, TrainingFreeMethod


@CLASSIFIERS.register("ncm")
class NearestClassMean(TrainingFreeMethod):
    name = "ncm"

    def make(self, inputs: FitInputs):
        cfg = inputs.cfg
        return ncm_classifier(inputs.store, cfg.ncm_metric, cfg.batches.use_views), [], cfg


def ncm_classifier(store, metric: str, views: bool) -> Classifier:
    """Class means of the stored training features (and views), streamed in chunks."""
    K = len(store.class_names)
    sums = torch.zeros(K, store.shape("train", "pooled")[1], dtype=torch.float64)  # (K, C)
    counts = torch.zeros(K, dtype=torch.float64)  # (K,)
    splits = ["train"] + ([VIEWS_SPLIT] if views and store.views else [])
    for split in splits:
        labels = torch.from_numpy(store.read(split, "labels").astype(np.int64))  # (R,)
        for first, block in store.iter_chunks(split, "pooled"):
            x = torch.from_numpy(block).double()  # (b, C)
            x = F.normalize(x, dim=1) if metric == "cosine" else x
            y = labels[first:first + len(block)]
            sums.index_add_(0, y, x)
            counts.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
    return Classifier("ncm", (sums / counts.clamp_min(1)[:, None]).float(), metric=metric)
