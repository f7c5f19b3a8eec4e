"""``wb``: weight balancing's second stage (Alshammari et al., CVPR 2022; github
ShadeAlsha/LTR-weight-balancing).

The Phase-I linear head (weights and bias) is fine-tuned on instance-sampled batches with

- the class-balanced loss of Cui et al. (softmax cross-entropy, class weight
  w_c = (1 - beta) / (1 - beta^n_c) normalised to sum to K, beta = 0.9999);
- a large weight decay lambda (SGD, on weights and bias);
- MaxNorm: after every step each class vector is projected back into the ball of radius r,
  w_k <- w_k * min(1, r / ||w_k||) (projected gradient descent; the bias is free). As in the
  authors' code, r is set relative to the Phase-I class norms:
  r = min_k ||w_k|| + thresh * (max_k ||w_k|| - min_k ||w_k||).

Their demo: lr 0.01, batch 64, 10 epochs, cosine, momentum 0.9, lambda = 0.1, thresh = 0.1;
our schedule is theirs. ``weight_decay`` and ``thresh`` (``--method-option``) are ``auto`` by
default: chosen together on the validation split over lambda in (0.1, 0.01, 0.001) x thresh in
(0.1, 0.5, 1.0), the demo's values first (9 runs). Two deviations from the demo, both toward
the paper's text: the loss is Cui et al.'s softmax CB loss (the demo's helper applies binary
cross-entropy to the softmax), and the projection follows every step (the demo projects once
per epoch). Reported (CIFAR-100-LT IF 100, ResNet-32): 53.4 % vs 47.1 % for class-balanced
re-training and 51.3 % for tau-norm; few 32.6 % vs 30.1 %.
"""

from __future__ import annotations

import torch

from ltkit.classifiers import Classifier
from ltkit.losses import make_loss
from ltkit.methods import CLASSIFIERS, Method, check_number, number

CB_BETA = 0.9999  # Cui et al.'s effective-number beta, as in the authors' second stage


@CLASSIFIERS.register("wb")
class WeightBalancing(Method):
    name = "wb"
    default_augment = "instance"
    augments = ("instance",)
    phase1_kinds = ("linear",)
    schedule = {"epochs": 10, "lr": 0.01, "batch_size": 64, "schedule": "cosine"}
    options = {"weight_decay": "auto", "thresh": "auto"}
    val_grid = {"weight_decay": (0.1, 0.01, 0.001), "thresh": (0.1, 0.5, 1.0)}

    def check_options(self, options: dict) -> None:
        check_number(options, "weight_decay", 0, 10)
        check_number(options, "thresh", 0, 1)

    def initial(self, phase1, cfg, *, cosine, generator):
        clf = Classifier.from_state(phase1.to_state())
        norms = clf.weight.detach().norm(dim=1)  # (K,)
        self.radius = float(norms.min() + number(cfg, "thresh") * (norms.max() - norms.min()))
        return clf, [p for p in clf.parameters() if p.requires_grad]

    def criterion(self, cfg, counts):
        return make_loss("cb", counts.tolist(), cb_beta=CB_BETA).to(counts.device)

    def weight_decay(self, cfg) -> float:
        return number(cfg, "weight_decay")

    @torch.no_grad()
    def project(self, clf) -> None:
        clf.weight.mul_(max_norm_scale(clf.weight, self.radius))


def max_norm_scale(weight: torch.Tensor, radius: float) -> torch.Tensor:
    """(K, 1) factor that brings every row of ``weight`` (K, C) into the ball of ``radius``."""
    return (radius / weight.norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)  # (K, 1)
