"""``logit-adjust``: post-hoc logit adjustment (Menon et al., ICLR 2021), no training.

The Phase-I classifier's logits minus ``tau * log(prior)``, the prior being the training
class frequencies pi_k = n_k / N (Eq. 9 of the paper: argmax_y f_y(x) - tau * log pi_y).
For a linear head this is the same weights with bias ``b - tau * log pi``; a cosine head
(LDAM) gets the same offset added to its scaled cosines (kind ``cosine-adjusted``).

``tau`` (``--method-option tau=VALUE``): a number, or ``auto`` (the default): the tau of
0..2 (step 0.1; ties to the smallest) with the best balanced accuracy on the validation split,
the paper's own protocol of choosing tau on held-out data. The curve is the history.
Reported: CIFAR-10-LT IF 100, ResNet-32, 71.4 % (ERM) -> 77.3 % post-hoc (tau = 1).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from ltkit.classifiers import TAU_GRID, Classifier, register_kind
from ltkit.errors import ConfigError
from ltkit.methods import CLASSIFIERS, FitInputs, TrainingFreeMethod
from ltkit.metrics import balanced_accuracy, per_class_accuracy


@register_kind("cosine-adjusted", needs=("scale",))
def _cosine_adjusted(clf: Classifier, x: torch.Tensor) -> torch.Tensor:
    logits = (clf.scale or 1.0) * F.normalize(x, dim=1) @ F.normalize(clf.weight, dim=1).T  # (B, K)
    return logits + clf.bias if clf.bias is not None else logits


def adjusted(phase1: Classifier, log_prior: torch.Tensor, tau: float) -> Classifier:
    """``phase1`` with ``tau * log_prior`` (K,) taken off its logits."""
    offset = -tau * log_prior.to(phase1.weight.device)  # (K,)
    bias = offset if phase1.bias is None else phase1.bias.detach() + offset
    if phase1.kind == "linear":
        return Classifier("linear", phase1.weight, bias)
    return Classifier("cosine-adjusted", phase1.weight, bias, scale=phase1.scale)


@CLASSIFIERS.register("logit-adjust")
class LogitAdjustment(TrainingFreeMethod):
    name = "logit-adjust"
    phase1_kinds = ("linear", "cosine")
    options = {"tau": "auto"}

    def check_options(self, options: dict) -> None:
        tau = options["tau"]
        if tau != "auto" and not (isinstance(tau, (int, float)) and 0 <= tau <= 10):
            raise ConfigError(f"--method-option tau={tau}: give a number in [0, 10], or auto (chosen on val)")

    def make(self, inputs: FitInputs):
        counts = np.asarray(inputs.store.train_counts, dtype=np.float64)  # (K,) verified by the store
        log_prior = torch.from_numpy(np.log(np.maximum(counts, 1) / counts.sum())).float()  # (K,)
        tau = inputs.cfg.method_options.get("tau", "auto")
        if tau != "auto":
            return adjusted(inputs.phase1, log_prior, float(tau)), [], inputs.cfg
        if inputs.val is None:
            raise ConfigError("logit-adjust chooses tau on the validation split, which this store lacks; "
                              "give --method-option tau=VALUE (the paper's default is 1)")
        pooled, labels = inputs.val
        curve = []
        for t in TAU_GRID:
            with torch.no_grad():
                preds = adjusted(inputs.phase1, log_prior, t).to(pooled.device)(pooled).argmax(1)
            curve.append({"tau": t, "val_acc": balanced_accuracy(per_class_accuracy(
                preds.cpu().numpy(), labels.cpu().numpy(), inputs.phase1.num_classes))})
        best = max(curve, key=lambda row: (row["val_acc"], -row["tau"]))["tau"]  # ties: the smallest tau
        chosen = dataclasses.replace(inputs.cfg, method_options={**inputs.cfg.method_options, "tau": best})
        return adjusted(inputs.phase1, log_prior, best), curve, chosen
