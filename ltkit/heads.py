"""Head kinds: what a Phase-II classifier reads from the store and how it is built (`HEADS`).

- ``linear`` (the default, every Phase-II method): a `Classifier` on the pooled features (C,);
- ``spatial``: a `ltkit.spatial_head.SpatialHead`, conv blocks on the stored maps (C, H, W)
  before pooling, its final layer made by the trained method (crt: re-initialised; linear:
  the Phase-I weights; lws: the Phase-I weights frozen, one scale per class learned). The
  post-hoc methods (tau-norm, logit-adjust, ncm) rescale the Phase-I pooled head: refused.

A head kind names the store array it reads, the augmenters it trains with (an augmenter name
-> the class that makes its batches: for maps, FSA mixes whole maps), its default schedule
(None: the method's) and how a head is built from the method's final layer and loaded back
from an artifact. `MapRows` hands out maps indexed like a bank's pooled features, from the
bank's `SpatialSource` (resident on the device, a mapped scratch copy, or the store: bounded
memory), so the balanced and class-balanced augmenters serve maps unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ltkit import choices
from ltkit.classifiers import Classifier
from ltkit.errors import ConfigError
from ltkit.metrics import balanced_accuracy, per_class_accuracy
from ltkit.registry import Registry


@dataclass(frozen=True)
class HeadKind:
    array: str                                    # the per-image store array it reads: pooled | features
    post_hoc: bool                                # the training-free methods (tau-norm, ...) apply to it
    final_width: Callable[[Any, int], int]        # (cfg, maps' channels C) -> its final layer's input width
    augmenters: Callable[[], dict[str, type]] | None  # augment name -> batch class (None: every one, as registered)
    schedule: dict[str, Any] | None               # its training defaults (None: the method's)
    build: Callable                               # (final, its params, bank, cfg) -> (head, trained params)
    load: Callable | None                         # (final Classifier, head state) -> head


HEADS: Registry[HeadKind] = Registry("head", declared=choices.FINETUNE_HEADS)


def head_of(clf) -> HeadKind:
    """The head kind of a classifier module (a `Classifier` is ``linear``)."""
    return HEADS.get(getattr(clf, "head", "linear"))


class MapRows:
    """The bank's maps indexed like its pooled features: ``rows[image, view]`` -> (B, C, H, W)
    float32 on the bank's device, gathered from a `SpatialSource` ((N, V, L, C) vectors)."""

    def __init__(self, source, num_images: int, num_views: int, hw: tuple[int, int]):
        self.source, self.hw = source, hw
        self.channels = source.feature_dim
        self.shape = (num_images, num_views, self.channels * hw[0] * hw[1])  # what the batch sizing reads

    def __getitem__(self, key: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        image, view = key  # (B,), (B,)
        return to_maps(self.source.maps(image, view), self.hw)


def to_maps(vectors: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, L, C) location vectors (row-major locations) -> (B, C, H, W) maps: a view, no copy,
    in channels-last memory (the layout the convolutions of a `SpatialHead` run fastest in)."""
    return vectors.transpose(1, 2).reshape(len(vectors), -1, *hw)


def map_bank(bank, hw: tuple[int, int]):
    """The same bank, its `pooled` replaced by `MapRows` over its maps (a spatial bank)."""
    rows = MapRows(bank.spatial, bank.labels.numel(), bank.num_views, hw)
    return dataclasses.replace(bank, pooled=rows)


# ---- linear: today's head ------------------------------------------------------------------
HEADS.register("linear")(HeadKind(array="pooled", post_hoc=True, final_width=lambda cfg, c: c,
                                  augmenters=None, schedule=None,
                                  build=lambda final, params, bank, cfg: (final, params), load=None))


# ---- spatial: conv blocks on the maps --------------------------------------------------------
# Defaults chosen on the validation split (benchmarks/spatial_defaults.py, docs/phase2.md).
SPATIAL_SCHEDULE = {"epochs": 10, "lr": 0.05, "batch_size": 256, "schedule": "cosine"}


def _spatial_augmenters() -> dict[str, type]:
    from ltkit.augment.balanced import ClassBalanced
    from ltkit.augment.fsa_maps import MapFeatureSpaceAugmenter
    from ltkit.augment.none import NoAugmentation

    return {"class-balanced": ClassBalanced, "none": NoAugmentation, "fsa": MapFeatureSpaceAugmenter}


def _build_spatial(final: Classifier, params: list, bank, cfg):
    from ltkit.spatial_head import SpatialHead

    generator = torch.Generator().manual_seed(cfg.seed)  # the blocks' draws: CPU, then moved
    head = SpatialHead(bank.pooled.channels, final.num_classes, cfg.spatial_head(), final, generator)
    return head, list(head.blocks.parameters()) + params


def _load_spatial(final: Classifier, state: dict[str, Any]):
    from ltkit.spatial_head import SpatialHead

    return SpatialHead.from_head_state(final, state)


HEADS.register("spatial")(HeadKind(array="features", post_hoc=False,
                                   final_width=lambda cfg, c: cfg.spatial_head().out_channels(c),
                                   augmenters=_spatial_augmenters,
                                   schedule=SPATIAL_SCHEDULE, build=_build_spatial, load=_load_spatial))


def augmenter_class(head: str, name: str):
    """The class making ``name``'s batches for a head kind; ConfigError naming the ones it takes."""
    from ltkit.augment import AUGMENTERS

    kind = HEADS.get(head)
    if kind.augmenters is None:
        return AUGMENTERS.get(name)
    table = kind.augmenters()
    if name not in table:
        raise ConfigError(f"--augment {name} makes pooled features; --head {head} trains on maps with "
                          f"--augment {', '.join(sorted(table))}")
    return table[name]


def check_head(head: str, method, channels: int, cfg) -> None:
    """Refuse a head / method pair that cannot work (before any data is read)."""
    kind = HEADS.get(head)
    if not method.trains and not kind.post_hoc:
        raise ConfigError(f"--classifier {method.name} rescales the Phase-I pooled head after the fact; "
                          f"--head {head} trains conv blocks and a final layer: use --classifier crt, "
                          "linear or lws")
    width = kind.final_width(cfg, channels)
    if width != channels and not method.reinitialises:
        raise ConfigError(f"--classifier {method.name} starts from the Phase-I weights, which take "
                          f"{channels} channels, but --head-width {width} makes the blocks give {width}: "
                          f"use --head-width 0 (the maps' {channels}) or --classifier crt")


def final_base(phase1: Classifier, cfg) -> Classifier:
    """What the method makes the final layer from: the Phase-I classifier, or (a head whose
    final layer is of another width; crt only, `check_head`) a zero one of that shape."""
    width = HEADS.get(cfg.head).final_width(cfg, phase1.feature_dim)
    if width == phase1.feature_dim:
        return phase1
    return Classifier("linear", torch.zeros(phase1.num_classes, width), torch.zeros(phase1.num_classes))


# ---- a split's inputs and accuracy ------------------------------------------------------------
SCORE_ROWS = 4096  # rows scored at a time (maps of a large validation split stay bounded)


def split_features(store, split: str, device: torch.device | str = "cpu", array: str = "pooled"):
    """(inputs, labels (N,) int64) of a split on ``device``: pooled (N, C) float32, or maps
    (N, C, H, W) as stored (float16; the head casts)."""
    return (torch.from_numpy(store.read(split, array)).to(device),
            torch.from_numpy(store.read(split, "labels").astype(np.int64)).to(device))


@torch.no_grad()
def predictions_on(clf, inputs: torch.Tensor) -> torch.Tensor:
    """(N,) top-1 class of each row of ``inputs`` (pooled features or maps, as the head reads)."""
    clf = clf.to(inputs.device)
    return torch.cat([clf(part).argmax(1) for part in inputs.split(SCORE_ROWS)])  # (N,)


def accuracy_on(clf, inputs: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Mean per-class top-1 accuracy (classes without samples left out)."""
    preds = predictions_on(clf, inputs)  # (N,)
    return balanced_accuracy(per_class_accuracy(preds.cpu().numpy(), labels.cpu().numpy(),
                                                clf.num_classes))


def check_inputs(st, cfg, phase1: Classifier) -> None:
    """Refuse, before any data is read, what the store lacks for this head and training split
    (``cfg``: a `ltkit.finetune_config.FinetuneConfig`)."""
    from ltkit.methods import get_method

    if cfg.train_on not in st.splits:
        raise ConfigError(f"--train-on {cfg.train_on}: {st.path} has no {cfg.train_on} split; hold one out "
                          "with ltkit train-backbone --bound-per-class N, then extract that backbone again")
    if get_method(cfg.classifier).trains:
        augmenter_class(cfg.head, cfg.augment_name())  # refused first: --augment cloud --head spatial
    check_head(cfg.head, get_method(cfg.classifier), phase1.feature_dim, cfg)
    if HEADS.get(cfg.head).array != "pooled":
        for split in (cfg.train_on, "val"):
            if split in st.splits and not st.has(split, HEADS.get(cfg.head).array):
                raise ConfigError(missing_maps(st, split))


def missing_maps(st, split: str) -> str:
    """The one-line refusal for a spatial head on a store without maps for ``split``."""
    backbone = st.attrs.get("backbone_path") or "BACKBONE.pt"
    splits = "train,val,test" + (",bound" if "bound" in st.splits else "")
    return (f"{st.path} keeps no feature maps for its {split} split, and a spatial head reads maps; "
            f"extract them: ltkit extract {backbone} --spatial-splits {splits}")


@torch.no_grad()
def split_logits(clf, st, split: str, device: torch.device, chunk_rows: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """(logits (N, K) float32, labels (N,) int64) of ``clf`` on a store split, streamed: the
    array its head kind reads, at most ``chunk_rows`` rows (and about 64 MiB) at a time."""
    array = head_of(clf).array
    if not st.has(split, array):
        raise ConfigError(missing_maps(st, split))
    shape = st.shape(split, array)
    row_bytes = st.dtype(split, array).itemsize * int(np.prod(shape[1:]))
    rows = max(1, min(chunk_rows, (64 << 20) // row_bytes))
    clf = clf.to(device).eval()
    parts = [clf(torch.from_numpy(np.asarray(block)).to(device)).float().cpu().numpy()  # (B, K)
             for _, block in st.iter_chunks(split, array, rows=rows)]
    labels = np.asarray(st.read(split, "labels"), dtype=np.int64)  # (N,)
    logits = np.concatenate(parts) if parts else np.zeros((0, clf.num_classes), np.float32)
    return logits, labels
