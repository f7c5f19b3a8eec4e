"""``disalign``: Distribution Alignment (Zhang et al., CVPR 2021; github Megvii-BaseDetection/DisAlign).

The Phase-I linear head is frozen; its logits z = W x + b are re-aligned per input by an
adaptive calibration function with a per-class magnitude alpha_j, a per-class margin beta_j
and an input-dependent confidence sigma(x) = sigmoid(v . x + c) from the pooled feature:

    s_j(x) = (1 + sigma(x) * alpha_j) * z_j(x) + sigma(x) * beta_j.

This is the authors' classification code (DisAlignLinear): alpha starts at 1, beta at 0, v at
0.1 in every channel and c as nn.Linear's bias, U(-1/sqrt(C), 1/sqrt(C)). The paper writes the
same family as s = sigma * (alpha' z + beta) + (1 - sigma) z, i.e. alpha' = 1 + alpha. Only
alpha, beta, v and c are trained, with the generalised re-weighting (GRW) loss: cross-entropy
with class weights

    w_c = (1 / r_c)^rho / sum_k (1 / r_k)^rho * K,   r_c = n_c / N,

normalised over the batch by the weights of its labels (torch's weighted cross-entropy, as the
authors'). ``rho`` (``--method-option rho=VALUE``): 1.2 by default, the authors' ImageNet-LT
setting (GRW_SCALE), or ``auto``: chosen on the validation split over (1.2, 1.0, 0.8). Their
schedule: lr 0.1, batch 256, cosine, weight decay 5e-4, instance sampling (the re-weighting
does the balancing; ``--augment instance`` is the only one it takes), but 300 epochs
(`REWEIGHTED_EPOCHS`) where they train 10 on ImageNet-LT (1000 classes, 5+ images each, 450
steps an epoch): with 10 classes and a 6-image class (Fashion-MNIST-LT IF 1000) a batch holding
one of its images is half that image's loss (weight 5.9 against 0.0016 for the head class),
such batches come once in seven, and 10 epochs (417 steps) left the calibration unconverged:
bound balanced 76.31 +- 7.55 over 3 seeds (one seed 67.6, its 6-image class at 0 %); 300
epochs: 81.83 +- 0.12 (docs/phase2.md). Reported (ImageNet-LT, ResNeXt-50): 52.9 % vs cRT's
49.6 %; few 31.4 % vs 27.3 %.
"""

from __future__ import annotations

import math

import torch

from ltkit.classifiers import Classifier, register_kind
from ltkit.errors import ConfigError
from ltkit.losses import LongTailLoss, LossOptions
from ltkit.methods import CLASSIFIERS, REWEIGHTED_EPOCHS, Method, check_number, number

CONFIDENCE_INIT = 0.1  # the authors' constant initialisation of the confidence weights v


@register_kind("disalign", aux=(("magnitude", "K"), ("margin", "K"), ("confidence_weight", "C"),
                                ("confidence_bias", "1")))
def _disalign(clf: Classifier, x: torch.Tensor) -> torch.Tensor:
    z = x @ clf.weight.T + clf.bias  # (B, K) the frozen Phase-I logits
    a = clf.aux
    sigma = torch.sigmoid(x @ a["confidence_weight"] + a["confidence_bias"])[:, None]  # (B, 1)
    return (1 + sigma * a["magnitude"]) * z + sigma * a["margin"]  # (B, K)


def grw_weights(counts: torch.Tensor, rho: float) -> torch.Tensor:
    """(K,) generalised re-weighting w_c = (1/r_c)^rho, normalised to sum to K."""
    freq = counts.double() / counts.sum()  # (K,) r_c
    weights = freq.pow(-rho)
    return (weights / weights.sum() * len(counts)).float()


@CLASSIFIERS.register("disalign")
class DistributionAlignment(Method):
    name = "disalign"
    default_augment = "instance"
    augments = ("instance",)
    phase1_kinds = ("linear",)
    schedule = {"epochs": REWEIGHTED_EPOCHS, "lr": 0.1, "batch_size": 256, "schedule": "cosine"}
    options = {"rho": 1.2}
    val_grid = {"rho": (1.2, 1.0, 0.8)}

    def check_options(self, options: dict) -> None:
        check_number(options, "rho", 0, 5)

    def initial(self, phase1, cfg, *, cosine, generator):
        K, C = phase1.weight.shape
        bias = phase1.bias if phase1.bias is not None else torch.zeros(K)
        draw = (torch.rand(1, generator=generator, device=generator.device) * 2 - 1) / math.sqrt(C)
        aux = {"magnitude": torch.ones(K), "margin": torch.zeros(K),
               "confidence_weight": torch.full((C,), CONFIDENCE_INIT), "confidence_bias": draw.cpu()}
        clf = Classifier("disalign", phase1.weight, bias, aux=aux)
        clf.weight.requires_grad_(False)
        clf.bias.requires_grad_(False)
        return clf, list(clf.aux.values())

    def criterion(self, cfg, counts):
        if bool((counts == 0).any()):
            raise ConfigError("disalign weighs each class by 1/frequency^rho: every class needs a "
                              "training image; drop the empty classes from the data")
        weight = grw_weights(counts, number(cfg, "rho"))
        return LongTailLoss(counts.float(), LossOptions(), weight=weight).to(counts.device)
