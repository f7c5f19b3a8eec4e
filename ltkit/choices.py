"""The names every choice takes, and the defaults ``--help`` shows, without importing torch.

``ltkit --help``, ``ltkit STAGE --help``, ``--version`` and shell completion read these
tuples, so they never import torch (the registries live beside torch code). Each registry is
built with its tuple here (``Registry("loss", declared=LOSSES)``): registering a name that is
not listed here fails at import, and tests/test_cli_fast.py fails for a name listed here that
nothing registers. A new backbone, loss, sampler, ... is therefore added in two places: its
``@REGISTRY.register("name")`` and its name below.
"""

from __future__ import annotations

# Registries (ltkit.registry.Registry, each checked against its tuple).
DATASETS = ("cifar10-lt", "cifar100-lt", "fashion-mnist-lt", "imagefolder", "synthetic")  # ltkit.data
BACKBONES = ("resnet18", "resnet18-cifar", "resnet32", "resnet34", "resnet34-cifar", "resnet50")  # ltkit.models
HEADS = ("cosine", "linear")  # ltkit.models: the Phase-I classifier head
LOSSES = ("balanced-softmax", "cb", "ce", "focal", "ldam", "logit-adjust")  # ltkit.losses
SAMPLERS = ("class-balanced", "instance", "progressive", "sqrt")  # ltkit.samplers
OPTIMIZERS = ("adamw", "sgd")  # ltkit.recipes: train-backbone --optimizer
AUGMENT_POLICIES = ("autoaugment", "autoaugment-imagenet", "none", "randaugment", "trivialaugment")  # ltkit.data
AUGMENTERS = ("class-balanced", "cloud", "fsa", "h2t", "instance", "none")  # ltkit.augment
# ltkit.methods (augment-finetune)
CLASSIFIERS = ("crt", "disalign", "la-loss", "linear", "logit-adjust", "lws", "ncm", "tau-norm", "wb")
# ltkit.classifiers: how a classifier scores
HEAD_KINDS = ("cosine", "cosine-adjusted", "disalign", "linear", "lws", "ncm")
FINETUNE_HEADS = ("linear", "spatial")  # ltkit.heads: what a Phase-II head reads (augment-finetune --head)

# Fixed choices (checked where they are used, each against the tuple here).
TIMM_PREFIX = "timm/"  # --arch timm/NAME: any timm CNN (the optional extra ltkit[timm])
PROFILES = ("exp", "step")  # ltkit.data.spec: the long-tail profile
TRAIN_SCHEDULES = ("cosine", "step")  # train-backbone --schedule
FINETUNE_SCHEDULES = ("constant", "cosine")  # augment-finetune --schedule
DRAWS = ("instance", "class")  # augment-finetune --tail-draw / --head-draw
NCM_METRICS = ("cosine", "l2")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # extract --precision
COMPRESSIONS = ("none", "lzf", "gzip")  # extract --compression
STORE_SPLITS = ("train", "val", "test", "bound")  # the splits a feature store holds (ltkit.store.schema)
TRAIN_ON = ("train", "bound")  # augment-finetune --train-on: bound, the empirical classification bound
EVAL_SPLITS = ("test", "val", "bound")  # evaluate --split: the store split measured
VAL_PARTS = ("all", "tune", "select")  # the validation split, or one of its stratified halves (ltkit.valparts)
SELECT_ON = ("auto", "val", "bound")  # sweep --select-on: the data the method is chosen on
GROUPS = ("many", "medium", "few")  # class groups by training-image count (ltkit.metrics)
SUMMARY_GROUPS = ("all", *GROUPS)  # evaluate --group: the classes the stderr summary shows
EVAL_METRICS = ("accuracy", "retrieval")
COMPARE_FORMATS = ("table", "markdown", "csv", "json")

# Defaults shown in --help and used by the library.
# FSA's thresholds. The paper gives none; these were chosen on the validation split of
# Fashion-MNIST-LT (IF 100, ResNet-32, class-balanced draws): the best mean over 3 seeds of
# a 4 x 3 grid (tau_s 0.3/0.5/0.7/0.9 x tau_g 0.1/0.3/0.5) with the paper's schedule
# (benchmarks/phase2_sweep.py; docs/phase2.md). The grid is flat within ~1 point.
TAU_S = 0.5
TAU_G = 0.3
# How a batch draws its tail and head samples. Algorithm 1 says "draw one sample from tail
# classes"; read class-balanced (a class, then one of its images) it beats the instance
# reading on validation by 3 points at IF 100 and 9 at IF 1000 (docs/phase2.md): with
# instance draws a 6-image class is almost never in a batch.
DRAW = "class"
AUTO = "auto"  # augment-finetune --tau-s/--tau-g/--gamma-min/--tail-draw/--head-draw: chosen on validation
# The spatial head's blocks (augment-finetune --head spatial), by its final layer. A method
# that draws a fresh one (crt): two full 3x3 conv blocks of 128 channels, chosen on the bound
# split of the Fashion-MNIST-LT CE stores over the maps' width (docs/phase2.md); one
# depthwise-separable block of 128 (--head-block separable --head-depth 1: a sixth of the
# time) matched it on three stores' bound splits but not on the IF 100 4-epoch one, so it is
# an option, not the default. A method that starts from the Phase-I weights (linear, lws)
# needs the maps' width: two conv blocks of the maps' own channels, residual (depth chosen on
# the validation split, benchmarks/spatial_defaults.py).
SPATIAL_BLOCKS = ("conv", "separable")  # ltkit.spatial_head.BLOCKS: --head-block
SPATIAL_FRESH = {"depth": 2, "width": 128, "block": "conv"}
SPATIAL_PHASE1 = {"depth": 2, "width": 0, "block": "conv"}
