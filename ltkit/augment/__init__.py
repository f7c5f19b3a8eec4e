"""Phase-II augmenters: balanced fine-tuning batches built from a `FeatureBank`.

Every augmenter has one call shape: built from a bank and an `AugmentConfig`, it hands out
batches of pooled features, ``batch(generator) -> (features (B, C) float32, labels (B,)
int64)``, drawing all its randomness from the explicit ``torch.Generator`` it is given (same
generator state, same batch, bit for bit). A new augmenter is one new module in this package
that registers a class under a name in `AUGMENTERS`; the tests are parametrised over the
registry.

Registered:
- ``fsa``: Chu et al.'s Algorithm 1 (feature-space augmentation from confusing classes);
- ``none``: the same balanced batches without augmentation (the paper's "No Aug");
- ``class-balanced``: Kang et al.'s class-balanced sampling over all classes, no augmentation;
- ``cloud``: Liu et al.'s feature cloud around tail samples (trains a cosine classifier with an
  angular margin);
- ``instance``: uniform over the training images (the natural, long-tailed distribution), for
  the methods that re-balance through their loss (la-loss, wb, disalign);
- ``h2t``: Li et al.'s head-to-tail fusion: a share of a class-balanced sample's channels
  replaced by an instance-drawn sample's, the balanced sample's label kept.

An augmenter may list the points its ``auto`` options are chosen among on the validation
split (``auto_grid``; `ltkit.augment_auto`).
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch

from ltkit import choices
from ltkit.augment.bank import DRAWS, FeatureBank, TensorSpatial, bank_from_tensors
from ltkit.errors import ConfigError
from ltkit.registry import Registry

# FSA's thresholds and how a batch draws its samples: why these values, in ltkit/choices.py.
TAU_S, TAU_G, DRAW = choices.TAU_S, choices.TAU_G, choices.DRAW
# An option given as AUTO is chosen by the stage on the validation split among the points of
# the augmenter's ``auto_grid`` (`ltkit.augment_auto`); an augmenter without a grid takes
# these fixed values for it.
AUTO = choices.AUTO
AUTO_FIXED = {"tau_s": TAU_S, "tau_g": TAU_G, "gamma_min": 0.0, "tail_draw": DRAW, "head_draw": DRAW,
              "fusion_ratio": 0.25}


@dataclass
class AugmentConfig:
    batch_size: int | None = 128   # samples per batch; fsa/cloud/none: 2 * Nt * (1 + Na) (None: the stage's)
    na: int | None = 3             # Na: augmented per real tail sample (paper: Na = Nf = 3; None: the table's Nf)
    # The five below may also be AUTO ("auto": chosen on the validation split by the stage)
    tau_s: float | str = TAU_S     # class-specific locations: CAM > tau_s (strict), in (0, 1)
    tau_g: float | str = TAU_G     # class-generic locations: CAM < tau_g (strict), in (0, 1)
    gamma_min: float | str = 0.0   # gamma ~ U(gamma_min, 1): share of class-specific vectors (paper: 0)
    tail_draw: str = DRAW          # instance: uniform over tail images; class: a tail class, then an image
    head_draw: str = DRAW          # the same for the head half of the batch
    use_views: bool = True         # draw a random stored view per image when the store has views
    fusion_ratio: float | str = 0.25  # h2t: share of channels taken from the instance-drawn sample, in (0, 1)

    def validate(self) -> None:
        """Checks every option; a None batch size or Na (left to the stage to fill in) passes."""
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError("--batch-size must be at least 1")
        if self.na is not None and self.na < 1:
            raise ConfigError("--na must be at least 1")
        for name in ("tau_s", "tau_g"):
            value = getattr(self, name)
            if value == AUTO:
                continue
            if not isinstance(value, (int, float)) or not 0.0 < value < 1.0:  # NaN fails too
                raise ConfigError(f"--{name.replace('_', '-')} must lie strictly between 0 and 1 "
                                  f"(CAMs are normalised to [0, 1]), got {value}")
        gamma = self.gamma_min
        if gamma != AUTO and not (isinstance(gamma, (int, float)) and 0.0 <= gamma < 1.0):
            raise ConfigError(f"--gamma-min must lie in [0, 1) (or be auto), got {self.gamma_min}")
        ratio = self.fusion_ratio
        if ratio != AUTO and not (isinstance(ratio, (int, float)) and 0.0 < ratio < 1.0):
            raise ConfigError(f"--fusion-ratio must lie strictly between 0 and 1 (or be auto), got {ratio}")
        for name in ("tail_draw", "head_draw"):
            if getattr(self, name) not in (*DRAWS, AUTO):
                raise ConfigError(f"unknown --{name.replace('_', '-')} {getattr(self, name)!r}; "
                                  f"valid: {', '.join(DRAWS)}, {AUTO}")

    def auto_fields(self) -> list[str]:
        """The options left AUTO (to be chosen on the validation split)."""
        return [name for name in AUTO_FIXED if getattr(self, name) == AUTO]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class Augmenter(Protocol):
    """What every registered augmenter class provides."""

    needs_spatial: ClassVar[bool]   # draws location vectors and CAMs (the bank must hold them)
    needs_cosine: ClassVar[bool]    # its batches train a cosine classifier with an angular margin
    balanced_batches: ClassVar[bool]  # its batches are Algorithm 1's 2 * Nt * (1 + Na) samples
    # optional: auto_grid: ClassVar[tuple[dict, ...]], the points (AugmentConfig fields ->
    # values) an AUTO option is chosen among on the validation split; the first is the default.
    # A point may name another augmenter ("augment": "none"): an off point, whose batches that
    # augmenter makes; `ltkit.augment_auto` keeps it unless augmenting beats it by more than noise

    def __init__(self, bank: FeatureBank, cfg: AugmentConfig) -> None: ...

    def batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (B, C) float32, labels (B,) int64) on the bank's device."""


AUGMENTERS: Registry[type[Augmenter]] = Registry("augmenter", declared=choices.AUGMENTERS)


CHUNK_BYTES = 16 << 20  # features of the batches drawn at once (two such chunks are alive)


def iter_batches(augmenter: Augmenter, generator: torch.Generator, total: int):
    """``total`` batches from ``augmenter``, drawn a chunk at a time through its
    ``batches(generator, n)`` when it has one (drawing many at once), else one ``batch`` call
    each. The next chunk is drawn in a background thread while the caller trains on this one,
    so the draws (gathers, reads of a streamed store) overlap the training steps; that thread
    alone uses ``generator``, chunk after chunk, so a seed still repeats a run exactly. Close
    the iterator when stopping early (`contextlib.closing`): that stops the thread there and
    then, not whenever the garbage collector gets to it."""
    many = getattr(augmenter, "batches", None)
    batch_bytes = 4 * augmenter.cfg.batch_size * augmenter.bank.feature_dim  # one (B, C) float32
    chunk = max(1, min(64, CHUNK_BYTES // batch_bytes))
    sizes = [min(chunk, total - done) for done in range(0, total, chunk)]

    def draw(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return many(generator, n) if many else [augmenter.batch(generator) for _ in range(n)]

    if not sizes:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ltkit-draw") as pool:
        pending = pool.submit(draw, sizes[0])
        for n in sizes[1:]:
            ready = pending.result()
            pending = pool.submit(draw, n)
            yield from ready
        last = pending.result()
    yield from last  # the thread is gone before the last chunk is handed out


def balanced_tail_count(batch_size: int, na: int) -> int:
    """Nt of a batch of ``2 * Nt * (1 + Na)`` (Algorithm 1); ConfigError when it does not fit."""
    unit = 2 * (1 + na)
    if batch_size % unit or batch_size < unit:
        lower = max(unit, batch_size // unit * unit)
        raise ConfigError(f"--batch-size {batch_size} does not fit a balanced batch of "
                          f"2*Nt*(1+Na) samples with Na={na}; use a multiple of {unit}, "
                          f"e.g. {lower} or {lower + unit}")
    return batch_size // unit


def nearest_balanced_batch(batch_size: int, na: int) -> int:
    """The batch size of 2 * Nt * (1 + Na) samples nearest ``batch_size`` (ties: the smaller)."""
    unit = 2 * (1 + na)
    return max(unit, unit * round(batch_size / unit - 1e-9))


def check_augmenter(cls: type[Augmenter], cfg: AugmentConfig) -> None:
    """ConfigError when ``cfg`` cannot work for the augmenter class ``cls`` (its batch size),
    before any data is read."""
    if cls.balanced_batches:
        balanced_tail_count(cfg.batch_size, cfg.na)


def make_augmenter(name: str, bank: FeatureBank, cfg: AugmentConfig, cls: type | None = None) -> Augmenter:
    """The registered augmenter ``name``, built on ``bank`` (``cls``: the class that makes its
    batches instead, e.g. maps for a spatial head: `ltkit.heads.augmenter_class`)."""
    cls = cls or AUGMENTERS.get(name)
    cfg.validate()
    if cfg.auto_fields():
        raise ConfigError(f"augmenter {name!r}: {', '.join(cfg.auto_fields())} still auto; the stage chooses "
                          "them on the validation split (ltkit.augment_auto.choose), or give values")
    check_augmenter(cls, cfg)
    if cls.needs_spatial and not bank.has_spatial:
        raise ConfigError(f"augmenter {name!r} needs the spatial feature maps and CAMs of the "
                          "training split; build the bank with spatial=True from a store that "
                          "holds /train/features and /train/cams")
    return cls(bank, cfg)


# Register the built-in augmenters (each module adds itself to AUGMENTERS on import).
from ltkit.augment import balanced, cloud, fsa, h2t, instance, none  # noqa: E402,F401

__all__ = ["AUGMENTERS", "AUTO", "AUTO_FIXED", "AugmentConfig", "Augmenter", "FeatureBank", "TensorSpatial",
           "bank_from_tensors", "balanced_tail_count", "check_augmenter", "nearest_balanced_batch",
           "make_augmenter"]
