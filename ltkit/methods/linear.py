"""``linear``: the Phase-I classifier itself, fine-tuned (Chu et al.'s Phase II).

The paper's schedule: SGD, lr 0.001 fixed, 6400 iterations, batch 128 (momentum 0.9 and weight
decay 5e-4 are our choice, the paper is silent). A cosine Phase-I head stays cosine; with an
augmenter that needs a cosine head (cloud), a linear Phase-I head becomes a cosine one with
the same directions.
"""

from __future__ import annotations

from ltkit.classifiers import Classifier
from ltkit.methods import CLASSIFIERS, PAPER, Method


@CLASSIFIERS.register("linear")
class Linear(Method):
    name = "linear"
    default_augment = "fsa"
    takes_cosine = True
    schedule = PAPER

    def method_name(self, augment: str) -> str:
        return augment  # fsa, none, cloud, ...: the augmenter names the run

    def initial(self, phase1, cfg, *, cosine, generator):
        if cosine and phase1.kind != "cosine":
            clf = Classifier("cosine", phase1.weight, None, scale=cfg.scale)
        else:
            clf = Classifier.from_state(phase1.to_state())
        return clf, [p for p in clf.parameters() if p.requires_grad]
