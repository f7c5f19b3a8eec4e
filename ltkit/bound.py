"""The empirical classification bound (Zhang et al., CVPR 2021, DisAlign): where a gap lies.

The same head trained on the store's balanced ``bound`` split (held out by ``train-backbone
--bound-per-class N``; ``augment-finetune --train-on bound``) instead of the long-tailed
train split shows what that head can reach on this representation. Measured on the same
split as a classifier, it splits the gap to a balanced ceiling in two:

- the classifier's share: Phase I -> bound; **classifier gap closed** = (accuracy - Phase I)
  / (bound - Phase I), balanced accuracies of the same split (None when the bound does not
  beat Phase I: there is no classifier gap to close);
- the representation's share: bound -> ceiling (a backbone trained on balanced data).

`bound_section` is the ``bound`` entry of an evaluation (``ltkit evaluate CLF --bound
BOUND_CLF``); `ltkit compare` shows its gap closed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ltkit.artifacts import resolve_input
from ltkit.classifiers import Classifier, load_classifier
from ltkit.errors import ConfigError
from ltkit.heads import head_of, split_logits
from ltkit.lineage import parent
from ltkit.metrics import balanced_accuracy, per_class_accuracy


def gap_closed(accuracy: float | None, base: float | None, top: float | None) -> float | None:
    """(accuracy - base) / (top - base): the share of the base-to-top gap closed; None when
    a value is missing or top does not lie above base."""
    if accuracy is None or base is None or top is None or top <= base:
        return None
    return (accuracy - base) / (top - base)


def balanced_on(clf, st, split: str, device: torch.device) -> float | None:
    logits, labels = split_logits(clf, st, split, device)
    return balanced_accuracy(per_class_accuracy(logits.argmax(1), labels, len(st.class_names)))


def bound_section(path: str | Path, st, split: str, device: torch.device, clf,
                  accuracy: float | None) -> dict[str, Any]:
    """The ``bound`` entry of an evaluation of ``clf`` (balanced ``accuracy`` on ``split``):
    the bound classifier at ``path`` measured on the same split of the same store."""
    path = resolve_input(path).resolve()
    bound, meta = load_classifier(path)
    options = meta.get("options") or {}
    if options.get("train_on") != "bound":
        raise ConfigError(f"--bound {path.name} was trained on the {options.get('train_on', 'train')} split; "
                          "the bound is a head trained on the bound split: augment-finetune --train-on bound")
    want, got = getattr(clf, "head", "linear"), getattr(bound, "head", "linear")
    if head_of(bound) is not head_of(clf):
        raise ConfigError(f"--bound {path.name} is a {got} head; the bound of this {want} head is a "
                          f"{want} head trained on the bound split (augment-finetune --head {want} --train-on bound)")
    recorded = parent(meta.get("lineage") or {}, "store", owner=path)
    if recorded is not None and Path(recorded.path).resolve() != Path(st.path).resolve():
        raise ConfigError(f"--bound {path.name} was made from {recorded.path}, not {st.path}; give the "
                          "bound classifier of this store")
    bound_acc = balanced_on(bound, st, split, device)
    phase1 = balanced_on(Classifier.from_store(st), st, split, device)
    return {"path": str(path), "method": meta.get("method"), "head": got,
            "balanced_accuracy": bound_acc, "phase1_balanced_accuracy": phase1,
            "classifier_gap_closed": gap_closed(accuracy, phase1, bound_acc)}
