"""``lws``: learnable weight scaling (Kang et al.): the Phase-I weights frozen, one scale per
class learned on the batches (Kang's schedule; class-balanced batches by default)."""

from __future__ import annotations

from ltkit.classifiers import Classifier
from ltkit.methods import CLASSIFIERS, Method


@CLASSIFIERS.register("lws")
class LearnableWeightScaling(Method):
    name = "lws"
    phase1_kinds = ("linear",)

    def initial(self, phase1, cfg, *, cosine, generator):
        clf = Classifier("lws", phase1.weight, phase1.bias)
        clf.weight.requires_grad_(False)
        if clf.bias is not None:
            clf.bias.requires_grad_(False)
        return clf, [clf.class_scale]
