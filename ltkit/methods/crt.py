"""``crt``: classifier re-training (Kang et al.): a re-initialised head trained on the batches.

nn.Linear's initialisation, U(-1/sqrt(C), 1/sqrt(C)), drawn from the run's generator; Kang's
schedule (batch 512, lr 0.2 cosine to 0, 10 epochs-equivalent); with ``--augment auto`` its
batches are class-balanced. With a cosine augmenter (cloud) the new head is a cosine one.
"""

from __future__ import annotations

import math

import torch

from ltkit.classifiers import Classifier
from ltkit.methods import CLASSIFIERS, Method


@CLASSIFIERS.register("crt")
class ClassifierRetraining(Method):
    name = "crt"
    takes_cosine = True
    reinitialises = True

    def initial(self, phase1, cfg, *, cosine, generator):
        K, C = phase1.weight.shape
        bound = 1.0 / math.sqrt(C)

        def draw(*shape: int) -> torch.Tensor:
            return (torch.rand(*shape, generator=generator, device=generator.device) * 2 - 1) * bound

        weight = draw(K, C)  # (K, C)
        scale = phase1.scale if phase1.kind == "cosine" else cfg.scale
        clf = Classifier("cosine", weight, None, scale=scale) if cosine else \
            Classifier("linear", weight, draw(K))  # (K,) bias
        return clf, [p for p in clf.parameters() if p.requires_grad]
