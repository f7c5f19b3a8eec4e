"""``tau-norm``: Kang et al.'s tau-normalisation, ``W_k / ||W_k||^tau``, bias dropped; no training.

``tau`` given: that exponent. ``tau=None``: the tau of 0..2 (step 0.1, ties to the smallest)
with the best balanced accuracy on the validation split; the curve is the history.
"""

from __future__ import annotations

import dataclasses

from ltkit.classifiers import TAU_GRID, pick_tau
from ltkit.errors import ConfigError
from ltkit.methods import CLASSIFIERS, FitInputs, TrainingFreeMethod


@CLASSIFIERS.register("tau-norm")
class TauNormalisation(TrainingFreeMethod):
    name = "tau-norm"
    phase1_kinds = ("linear",)

    def make(self, inputs: FitInputs):
        clf, curve, tau = tau_normalized(inputs.phase1, inputs.cfg.tau, inputs.val)
        return clf, curve, dataclasses.replace(inputs.cfg, tau=tau)


def tau_normalized(phase1, tau: float | None, val):
    """(classifier, validation curve, tau): ``tau=None`` picks it on ``val`` (pooled, labels)."""
    if tau is not None:
        return phase1.tau_normalized(tau), [], tau
    if val is None:
        raise ConfigError("--tau auto picks tau on the validation split, which this store lacks; "
                          "give --tau VALUE (Kang et al. found values near 1 work)")
    tau, scores = pick_tau(phase1, [val[0]], val[1].cpu().numpy())
    if tau is None:
        raise ConfigError("--tau auto found no validation image; give --tau VALUE")
    curve = [{"tau": t, "val_acc": s} for t, s in zip(TAU_GRID, scores)]
    return phase1.tau_normalized(tau), curve, tau
