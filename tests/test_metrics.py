"""Every metric against a hand-computed example."""

import math

import numpy as np
import pytest
import torch

from ltkit.errors import ConfigError
from ltkit.metrics import (
    balanced_accuracy,
    calibration,
    check_thresholds,
    class_set_accuracy,
    confusion_matrix,
    group_accuracies,
    nan_to_none,
    per_class_accuracy,
    retrieval_scores,
    retrieval_summary,
    split_of,
    topk_accuracy,
)


def test_per_class_and_balanced_accuracy():
    labels = np.array([0, 0, 1, 1, 1, 2])
    preds = np.array([0, 1, 1, 1, 0, 0])
    per_class = per_class_accuracy(preds, labels, 4)  # class 3 has no test image
    assert per_class[:3] == pytest.approx([1 / 2, 2 / 3, 0.0])
    assert np.isnan(per_class[3])
    assert balanced_accuracy(per_class) == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    assert balanced_accuracy(np.array([np.nan])) is None


def test_split_boundaries_exactly_20_and_100():
    counts = np.array([101, 100, 20, 19, 1000, 0])
    assert split_of(counts).tolist() == ["many", "medium", "medium", "few", "many", "few"]
    assert split_of(counts, many=99, few=21).tolist() == ["many", "many", "few", "few", "many", "few"]


def test_group_accuracies_hand_example():
    per_class = np.array([1.0, 0.5, 0.25, 0.0])
    groups = group_accuracies(per_class, np.array([101, 100, 20, 19]))
    assert groups["many"] == {"accuracy": 1.0, "classes": 1}
    assert groups["medium"] == {"accuracy": pytest.approx(0.375), "classes": 2}
    assert groups["few"] == {"accuracy": 0.0, "classes": 1}  # a real 0 %, not an empty split


def test_empty_split_is_none_not_zero():
    groups = group_accuracies(np.array([0.5, 0.7]), np.array([50, 60]))
    assert groups["many"] == {"accuracy": None, "classes": 0}
    assert groups["few"] == {"accuracy": None, "classes": 0}
    assert groups["medium"]["accuracy"] == pytest.approx(0.6)
    # a split whose classes have no test image is also None
    groups = group_accuracies(np.array([np.nan, 0.7]), np.array([500, 60]))
    assert groups["many"] == {"accuracy": None, "classes": 1}


def test_thresholds_must_not_overlap():
    check_thresholds(100, 20)
    check_thresholds(20, 21)  # medium empty, still a partition
    with pytest.raises(ConfigError, match="overlap"):
        check_thresholds(10, 50)


def test_class_set_accuracy():
    per_class = np.array([1.0, 0.5, 0.0, np.nan])
    assert class_set_accuracy(per_class, [0, 2]) == {"accuracy": 0.5, "classes": 2}
    assert class_set_accuracy(per_class, []) == {"accuracy": None, "classes": 0}
    assert class_set_accuracy(per_class, [3]) == {"accuracy": None, "classes": 1}


def test_topk_accuracy_hand_example():
    logits = np.array([[6.0, 5, 4, 3, 2, 1],    # label 4: rank 5 -> top-5 hit
                       [6.0, 5, 4, 3, 2, 1],    # label 5: rank 6 -> miss
                       [1.0, 9, 2, 3, 4, 5],    # label 1: rank 1
                       [1.0, 2, 3, 4, 5, 6]])   # label 0: rank 6 -> miss
    labels = np.array([4, 5, 1, 0])
    assert topk_accuracy(logits, labels, 1) == pytest.approx(1 / 4)
    assert topk_accuracy(logits, labels, 5) == pytest.approx(2 / 4)
    assert topk_accuracy(logits, labels, 6) == 1.0
    assert topk_accuracy(logits[:0], labels[:0], 5) is None
    with pytest.raises(ConfigError):
        topk_accuracy(logits[:, :4], labels, 5)


def _logits(*probs):
    return np.log(np.array(probs))


def test_ece_hand_example():
    # confidences 0.9 (right), 0.9 (wrong), 0.7 (right), 0.7 (right)
    logits = _logits([0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.3, 0.7])
    labels = np.array([0, 1, 1, 1])
    cal = calibration(logits, labels, bins=15)
    # bin of 0.9: (13/15, 14/15] = 13; of 0.7: (10/15, 11/15] = 10
    assert cal["count"][13] == 2 and cal["count"][10] == 2 and sum(cal["count"]) == 4
    assert cal["accuracy"][13] == pytest.approx(0.5) and cal["confidence"][13] == pytest.approx(0.9)
    assert cal["accuracy"][10] == pytest.approx(1.0) and cal["confidence"][10] == pytest.approx(0.7)
    assert cal["confidence"][0] is None  # an empty bin
    assert cal["ece"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.3)
    assert len(cal["edges"]) == 16


def test_ece_bin_edges_are_right_inclusive():
    cal = calibration(np.array([[0.0, 0.0], [50.0, 0.0]]), np.array([0, 0]), bins=2)
    # confidence 0.5 lies on the edge between the bins: it belongs to the first, (0, 0.5]
    assert cal["count"] == [1, 1]
    assert cal["ece"] == pytest.approx(0.5 * 0.5 + 0.5 * 0.0, abs=1e-9)


def test_confusion_matrix():
    cm = confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 0, 1, 2]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]


def _retrieval_example():
    # points on the unit circle at these angles (degrees); norms differ: cosine ignores them
    angles = np.radians([0, 10, 25, 90, 3, 200])
    norms = np.array([1.0, 5.0, 0.5, 2.0, 3.0, 1.0])
    feats = np.stack([np.cos(angles), np.sin(angles)], axis=1) * norms[:, None]
    labels = np.array([0, 0, 1, 1, 1, 2])
    return torch.tensor(feats, dtype=torch.float32), torch.tensor(labels)


# Hand-ranked galleries (each query excluded from its own):
#   q0 (0°, L0):  3°L1, 10°L0, 25°L1, 90°L1, 200°  -> rel 0 1 0 0    AP 1/2
#   q1 (10°, L0): 3°L1, 0°L0, ...                  -> rel 0 1 0 0    AP 1/2
#   q2 (25°, L1): 10°L0, 3°L1, 0°L0, 90°L1         -> rel 0 1 0 1    AP (1/2 + 2/4)/2
#   q3 (90°, L1): 25°L1, 10°L0, 3°L1, 0°L0         -> rel 1 0 1 0    AP (1 + 2/3)/2, rank-1 hit
#   q4 (3°, L1):  0°L0, 10°L0, 25°L1, 90°L1        -> rel 0 0 1 1    AP (1/3 + 2/4)/2
#   q5 (200°, L2): no other sample of its class    -> excluded
AP = [0.5, 0.5, 0.5, (1 + 2 / 3) / 2, (1 / 3 + 2 / 4) / 2]


@pytest.mark.parametrize("budget", [1 << 22, 6, 1])  # one chunk, one query per chunk
def test_retrieval_hand_example(budget):
    feats, labels = _retrieval_example()
    ap, hit, valid = retrieval_scores(feats, labels, budget=budget)
    assert valid.tolist() == [True] * 5 + [False]
    assert ap[:5] == pytest.approx(AP)
    assert hit.tolist()[:5] == [False, False, False, True, False]
    summary = retrieval_summary(ap, hit, valid, labels.numpy(), np.array([150, 50, 5]))
    assert summary["map"] == pytest.approx(sum(AP) / 5)
    assert summary["rank1"] == pytest.approx(1 / 5)
    assert summary["queries"] == 5 and summary["excluded_queries"] == 1
    assert summary["splits"]["many"] == {"map": pytest.approx(0.5), "rank1": 0.0, "queries": 2,
                                         "classes": 1}
    assert summary["splits"]["medium"]["map"] == pytest.approx(sum(AP[2:]) / 3)
    assert summary["splits"]["medium"]["rank1"] == pytest.approx(1 / 3)
    # the few split has a class but no usable query: empty, not 0
    assert summary["splits"]["few"] == {"map": None, "rank1": None, "queries": 0, "classes": 1}


def test_nan_to_none():
    assert nan_to_none(np.array([0.5, math.nan])) == [0.5, None]
