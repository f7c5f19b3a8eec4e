"""``la-loss``: a re-initialised head trained with the logit-adjusted loss (Menon et al., ICLR 2021).

The loss (Eq. 10 of the paper) is cross-entropy on the logits shifted by the training prior,

    l(y, f(x)) = -log( exp(f_y(x) + tau * log pi_y) / sum_k exp(f_k(x) + tau * log pi_k) ),

pi_k = n_k / N the training class frequencies; prediction uses the raw logits f(x) (argmax_y
f_y(x)). For tau = 1 this is Fisher-consistent for the balanced error, which is why the paper
uses tau = 1 and why it is our default; ``--method-option tau=auto`` chooses it on the
validation split over (1, 0.5, 1.5, 2). The loss corrects for the *training* prior, so the
batches must follow it: instance sampling (``--augment instance``, the default); balanced
batches are refused. The head is cRT's (nn.Linear's initialisation from the run's generator)
with Kang et al.'s schedule. Reported for logit adjustment (CIFAR-10-LT IF 100, ResNet-32,
from-scratch training): 71.4 % (ERM) -> 77.3 %.
"""

from __future__ import annotations

from ltkit.losses import make_loss
from ltkit.methods import CLASSIFIERS, check_number, number
from ltkit.methods.crt import ClassifierRetraining


@CLASSIFIERS.register("la-loss")
class LogitAdjustedLoss(ClassifierRetraining):
    name = "la-loss"
    default_augment = "instance"
    augments = ("instance",)
    takes_cosine = False
    options = {"tau": 1.0}
    val_grid = {"tau": (1.0, 0.5, 1.5, 2.0)}

    def check_options(self, options: dict) -> None:
        check_number(options, "tau", 0, 10)

    def criterion(self, cfg, counts):
        return make_loss("logit-adjust", counts.tolist(), la_tau=number(cfg, "tau")).to(counts.device)
