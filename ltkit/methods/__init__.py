"""Phase-II classifier methods, one registered class per method (`CLASSIFIERS`).

A method says how its classifier is made from the cache, what it needs, which augmenters it
combines with and which defaults it trains with; `ltkit.finetune` runs the stage around it.
Two kinds:

- trained (``trains = True``): `initial` gives the classifier to train and its trained
  parameters; the stage's SGD loop trains them on an augmenter's batches with the method's
  ``schedule`` (`PAPER` or `KANG`) unless options say otherwise;
- training-free (``trains = False``): `make` builds the classifier from the store (and the
  validation split) directly; it takes ``--augment none`` only, and no confusing-class table.

A trained method may also say how it learns: its loss (`criterion`, built once from the
training class counts; plain cross-entropy unless it says otherwise), a projection after each
step (`project`, e.g. weight balancing's MaxNorm), its weight decay (`weight_decay`), and the
augmenters whose batches it can learn from (``augments``; e.g. a re-weighted loss wants
instance-sampled batches, not batches balanced already).

A new method is one new module in this package that subclasses `Method` and registers itself
with ``@CLASSIFIERS.register(NAME)``; its own options (``options``: name -> default) are given
as ``--method-option NAME=VALUE`` and reach it as ``cfg.method_options``. An option listed in
``val_grid`` may be ``auto``: the stage then chooses it on the validation split with the augmenter's
``auto`` options (`ltkit.augment_auto`: one classifier per point of the grids' product, the
best kept, ties to the first, every grid listing the paper's value first). The tests are
parametrised over the registry.
"""

from __future__ import annotations

import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ltkit import choices
from ltkit.errors import ConfigError
from ltkit.registry import Registry

# Default schedules. PAPER: Chu et al.'s fine-tuning (lr 0.001 fixed, 6400 iterations, batch
# 128). KANG: Kang et al.'s decoupled re-training (batch 512, lr 0.2 cosine to 0, 10
# epochs-equivalent: ceil(10 * N / batch) iterations).
PAPER = {"iterations": 6400, "lr": 0.001, "batch_size": 128, "schedule": "constant"}
KANG = {"epochs": 10, "lr": 0.2, "batch_size": 512, "schedule": "cosine"}
# The epochs of the methods that re-balance through their loss on instance-sampled batches
# (la-loss, disalign): there a class is drawn as often as it has images, so 10 epochs draw a
# 6-image class 60 times and leave its part of the loss far from its minimum (docs/phase2.md).
REWEIGHTED_EPOCHS = 300


@dataclass
class FitInputs:
    """What a training-free method may build its classifier from (`Method.make`)."""

    store: Any                 # the open feature store
    phase1: Any                # the store's Phase-I `Classifier`
    cfg: Any                   # the resolved `FinetuneConfig`
    device: torch.device
    val: tuple[torch.Tensor, torch.Tensor] | None  # validation (pooled (N, C), labels (N,)), if any


class Method:
    """One Phase-II classifier method; subclasses set the class attributes they change."""

    name: ClassVar[str] = ""
    trains: ClassVar[bool] = True              # trained on batches (False: `make` builds it)
    default_augment: ClassVar[str] = "class-balanced"  # what --augment auto means for it
    takes_cosine: ClassVar[bool] = False       # can train the cosine head a needs_cosine augmenter asks for
    phase1_kinds: ClassVar[tuple[str, ...] | None] = None  # Phase-I kinds it works from (None: any)
    schedule: ClassVar[dict[str, Any]] = KANG  # its defaults: lr, batch_size, schedule, iterations | epochs
    options: ClassVar[dict[str, Any]] = {}     # its own options, name -> default (--method-option)
    reinitialises: ClassVar[bool] = False      # draws a new final layer (any width), not the Phase-I one
    val_grid: ClassVar[dict[str, tuple]] = {}  # its options that `auto` chooses on val: name -> values tried
    augments: ClassVar[tuple[str, ...] | None] = None  # augmenters it can train on (None: any)

    def method_name(self, augment: str) -> str:
        """The run's name (file names, reports): ``AUGMENT-NAME`` unless the method says otherwise."""
        return f"{augment}-{self.name}"

    def check_options(self, options: dict[str, Any]) -> None:
        """ConfigError when one of its own options cannot work (names are checked already)."""

    def initial(self, phase1, cfg, *, cosine: bool, generator: torch.Generator):
        """(classifier to train, its trained parameters), for a trained method."""
        raise NotImplementedError

    def criterion(self, cfg, counts: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The training loss ``(logits (B, K), labels (B,)) -> scalar``, from the training
        class counts (K,) and the resolved ``cfg``: cross-entropy unless the method says otherwise."""
        return F.cross_entropy

    def weight_decay(self, cfg) -> float:
        """The SGD weight decay it trains with (the stage's --weight-decay unless it chooses its own)."""
        return cfg.weight_decay

    def project(self, clf) -> None:
        """Called after every SGD step (in place; under torch.no_grad): a projected-gradient method's constraint."""

    def make(self, inputs: FitInputs):
        """(classifier, history, cfg with what was chosen filled in), for a training-free method."""
        raise NotImplementedError


class TrainingFreeMethod(Method):
    """A method that builds its classifier from the store (`make`), named by itself alone."""

    trains = False
    default_augment = "none"
    schedule = PAPER  # unused (nothing trains); the defaults its artifacts have always recorded

    def method_name(self, augment: str) -> str:
        return self.name


CLASSIFIERS: Registry[type[Method]] = Registry("classifier", declared=choices.CLASSIFIERS)


def check_number(options: dict[str, Any], name: str, low: float, high: float, *, auto: bool = True) -> None:
    """ConfigError unless option ``name`` is a number in [low, high] (or ``auto``, when it may be)."""
    value = options[name]
    if auto and value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"--method-option {name}={value}: give a number in [{low}, {high}]"
                          + (", or auto (chosen on the validation split)" if auto else ""))


def number(cfg, name: str) -> float:
    """The method option ``name`` of a resolved ``cfg`` as a number; ConfigError if still auto."""
    value = cfg.method_options[name]
    if value == "auto":
        raise ConfigError(f"{name}=auto is chosen on the validation split by augment-finetune "
                          "(ltkit.finetune.fit); give a number to train one classifier")
    return float(value)


def get_method(name: str) -> Method:
    return CLASSIFIERS.get(name)()


def training_free() -> tuple[str, ...]:
    """The names of the methods that train nothing (they take --augment none only)."""
    return tuple(name for name, cls in CLASSIFIERS.items() if not cls.trains)


def check_combination(augment: str, classifier: str, phase1_kind: str) -> None:
    """Refuse an augmenter / classifier pair (or a Phase-I kind) that cannot work, saying what would."""
    from ltkit.augment import AUGMENTERS

    method, aug = CLASSIFIERS.get(classifier), AUGMENTERS.get(augment)
    if not method.trains and augment != "none":
        raise ConfigError(f"--classifier {classifier} needs no training batches, so --augment "
                          f"{augment} would do nothing; use --augment none (or leave it out)")
    if method.augments is not None and augment not in method.augments:
        raise ConfigError(f"--classifier {classifier} re-balances through its own loss on instance-sampled "
                          f"batches; --augment {augment} would re-balance twice: use --augment "
                          f"{' or '.join(method.augments)} (or leave it out)")
    if aug.needs_cosine and not method.takes_cosine:
        takers = " or ".join(n for n, c in CLASSIFIERS.items() if c.takes_cosine)
        raise ConfigError(f"--augment {augment} trains a cosine classifier with an angular margin: "
                          f"use it with --classifier {takers}, not {classifier}")
    if method.phase1_kinds is not None and phase1_kind not in method.phase1_kinds:
        fits = ", ".join(n for n, c in CLASSIFIERS.items() if c.phase1_kinds is None or phase1_kind in c.phase1_kinds)
        raise ConfigError(f"--classifier {classifier} rescales a {' or '.join(method.phase1_kinds)} Phase-I "
                          f"classifier; this store's is {phase1_kind}: use {fits}")


# Register every method module of this package (each adds itself to CLASSIFIERS on import).
for _module in pkgutil.iter_modules(__path__):
    import_module(f"{__name__}.{_module.name}")
