"""Phase-I losses for long-tailed training, by name: `make_loss("ldam", counts, drw_epoch=160)`.

Every loss is called as `loss(logits (B, K), targets (B,) or (B, K)) -> scalar` and has
`set_epoch(e)`.
Conventions, the same for every loss:
- Class weights (the `cb` loss, and deferred re-weighting, DRW) reduce like
  `F.cross_entropy(weight=w)`: sum_i w[y_i] * l_i / sum_i w[y_i], as in the LDAM-DRW code.
  Without weights the reduction is the plain batch mean.
- Weights by effective number (Cui et al.): w_c = (1 - beta) / (1 - beta^n_c), normalised to
  sum to K.
- LDAM takes logits that already include the scale s: the cosine head (`head="cosine"`,
  scale 30) gives s * cos, and LDAM subtracts s * m_y from the true-class logit, so
  loss = CE(s * (cos - m_y * onehot)), exactly the reference CE(s * (cos - m)). Use
  `ldam_s` equal to the head's scale. With a linear head the margin is s * m_y in logits.
- DRW (Cao et al.): from epoch `drw_epoch` on (that epoch included), ce / focal / ldam use
  effective-number weights with `drw_beta`; before it, none. The other losses already
  re-balance, so DRW with them is refused.
- Soft targets t (B, K) (mixup / cutmix mixes, label smoothing) meet every loss by one rule:
  the target-weighted mix of the losses with each class as the label, sum_c t_c * l_c(x),
  with a class weight w mixed the same way: sum_{i,c} t_ic w_c l_ic / sum_{i,c} t_ic w_c.
  A one-hot target gives the hard loss exactly. So ce / cb / balanced-softmax / logit-adjust
  are CE with probability targets on their (adjusted) logits, and focal mixes its per-class
  terms -(1 - p_c)^gamma log p_c. LDAM's margin belongs to the true class, so its margins
  are mixed by the target first: s * m_c * t_c is subtracted from logit c, then the CE mix.
- Label smoothing eps turns every target t into (1 - eps) * t + eps / K (PyTorch's
  convention) and takes the soft path above, with every loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ltkit import choices
from ltkit.errors import ConfigError
from ltkit.registry import Registry


@dataclass
class LossOptions:
    focal_gamma: float = 1.0  # focal focusing gamma >= 0; 0 is plain CE, Lin et al. use 2
    cb_beta: float = 0.9999  # effective-number beta in [0, 1) of the cb loss; 0 = unweighted
    ldam_max_m: float = 0.5  # largest LDAM margin (of the rarest class), in cosine units, >= 0
    ldam_s: float = 30.0  # scale of the logits LDAM receives (the cosine head's scale), > 0
    la_tau: float = 1.0  # logit-adjustment strength tau >= 0; 1 = balanced softmax
    drw_epoch: int | None = None  # first epoch of deferred re-weighting; None = never
    drw_beta: float = 0.9999  # effective-number beta in [0, 1) of the DRW weights
    label_smoothing: float = 0.0  # eps in [0, 1): targets (1 - eps) * onehot + eps / K; 0.1 is usual


LossFactory = Callable[[torch.Tensor, LossOptions], "LongTailLoss"]
LOSSES: Registry[LossFactory] = Registry("loss", declared=choices.LOSSES)
DRW_LOSSES = ("ce", "focal", "ldam")  # losses that can take deferred re-weighting


def effective_number_weights(counts: torch.Tensor, beta: float) -> torch.Tensor:
    """(K,) class weights (1 - beta) / (1 - beta^n_c), normalised to sum to K (Cui et al.)."""
    counts = counts.double()
    weights = (1.0 - beta) / (1.0 - torch.pow(beta, counts))  # (K,); beta=0 gives all ones
    return (weights / weights.sum() * len(counts)).float()


class LongTailLoss(nn.Module):
    """Base: a per-sample loss, an optional fixed class weight, optional DRW weights."""

    def __init__(self, counts: torch.Tensor, opts: LossOptions,
                 weight: torch.Tensor | None = None):
        super().__init__()
        self.num_classes = len(counts)
        self.drw_epoch = opts.drw_epoch
        self.label_smoothing = opts.label_smoothing
        self.epoch = 0
        self.register_buffer("counts", counts.float())  # (K,)
        self.register_buffer("weight", weight)  # (K,) or None: always applied
        drw = None if opts.drw_epoch is None else effective_number_weights(counts, opts.drw_beta)
        self.register_buffer("drw_weight", drw)  # (K,) or None: applied from drw_epoch on

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def class_weight(self) -> torch.Tensor | None:
        """The (K,) weights in force this epoch, or None for an unweighted mean."""
        if self.drw_epoch is not None and self.epoch >= self.drw_epoch:
            return self.drw_weight
        return self.weight

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B, K) logits, (B,) targets -> (B,) unweighted losses."""
        return F.cross_entropy(logits, targets, reduction="none")

    def per_class(self, logits: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        """(B, K) logits, (B, K) soft targets -> (B, K) losses l(x_i, c) of each class as the
        label (the soft rule of the module docstring mixes them by the targets)."""
        return -F.log_softmax(logits, dim=1)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B, K) logits and (B,) class indices or (B, K) soft targets -> the batch's loss."""
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ConfigError(f"loss built for {self.num_classes} classes got logits of shape "
                              f"{tuple(logits.shape)}; give the model's class counts to make_loss")
        if targets.dim() == 2 and targets.shape != logits.shape:
            raise ConfigError(f"soft targets of shape {tuple(targets.shape)} for logits of shape {tuple(logits.shape)}")
        if targets.dim() == 2 or self.label_smoothing > 0:
            return self._soft(logits.float(), targets)
        losses = self.per_sample(logits.float(), targets)  # (B,)
        weight = self.class_weight()
        if weight is None:
            return losses.mean()
        w = weight[targets]  # (B,)
        return (w * losses).sum() / w.sum()

    def _soft(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        soft = targets.float() if targets.dim() == 2 else F.one_hot(targets, self.num_classes).float()  # (B, K)
        soft = (1.0 - self.label_smoothing) * soft + self.label_smoothing / self.num_classes
        mixed = soft * self.per_class(logits, soft)  # (B, K) t_ic * l(x_i, c)
        weight = self.class_weight()
        if weight is None:
            return mixed.sum(1).mean()
        return (mixed * weight).sum() / (soft * weight).sum()


class FocalLoss(LongTailLoss):
    """-(1 - p_y)^gamma * log p_y (Lin et al.), on the softmax."""

    def __init__(self, counts: torch.Tensor, opts: LossOptions):
        super().__init__(counts, opts)
        self.gamma = opts.focal_gamma

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = -F.cross_entropy(logits, targets, reduction="none")  # (B,) log p_y
        # 1 - p_y via expm1 stays exact near p_y = 1; the floor keeps the gradient of
        # (1 - p)^gamma finite (not NaN) for gamma < 1 when p_y rounds to 1
        one_minus_p = (-torch.expm1(log_p)).clamp_min(1e-12)  # (B,)
        return -(one_minus_p**self.gamma) * log_p

    def per_class(self, logits: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits, dim=1)  # (B, K)
        return -((-torch.expm1(log_p)).clamp_min(1e-12) ** self.gamma) * log_p


class LDAMLoss(LongTailLoss):
    """Cao et al.: CE after subtracting s * m_y from the true-class logit, m_c ~ n_c^(-1/4)."""

    def __init__(self, counts: torch.Tensor, opts: LossOptions):
        super().__init__(counts, opts)
        margins = counts.double() ** -0.25  # (K,) rarer classes get larger margins
        self.register_buffer("margins", (margins * (opts.ldam_max_m / margins.max())).float())
        self.s = opts.ldam_s

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(targets, self.num_classes)  # (B, K)
        adjusted = logits - self.s * self.margins * onehot  # (B, K) margin on the true class only
        return F.cross_entropy(adjusted, targets, reduction="none")

    def per_class(self, logits: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        # the margin of each class mixed by its target weight (one-hot: the true class's margin)
        return -F.log_softmax(logits - self.s * self.margins * soft, dim=1)  # (B, K)


class LogitAdjustedLoss(LongTailLoss):
    """CE on logits + tau * log prior (Menon et al.); tau = 1 is balanced softmax (Ren et al.).
    Predict with the raw logits: the adjustment exists only in training."""

    def __init__(self, counts: torch.Tensor, opts: LossOptions, tau: float):
        super().__init__(counts, opts)
        self.tau = tau
        self.register_buffer("log_prior", (counts / counts.sum()).log().float())  # (K,)

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits + self.tau * self.log_prior, targets, reduction="none")

    def per_class(self, logits: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        return -F.log_softmax(logits + self.tau * self.log_prior, dim=1)  # (B, K)


@LOSSES.register("ce")
def _ce(counts: torch.Tensor, opts: LossOptions) -> LongTailLoss:
    return LongTailLoss(counts, opts)


@LOSSES.register("focal")
def _focal(counts: torch.Tensor, opts: LossOptions) -> LongTailLoss:
    return FocalLoss(counts, opts)


@LOSSES.register("cb")
def _cb(counts: torch.Tensor, opts: LossOptions) -> LongTailLoss:
    return LongTailLoss(counts, opts, weight=effective_number_weights(counts, opts.cb_beta))


@LOSSES.register("ldam")
def _ldam(counts: torch.Tensor, opts: LossOptions) -> LongTailLoss:
    return LDAMLoss(counts, opts)


@LOSSES.register("balanced-softmax")
def _balanced_softmax(counts: torch.Tensor, opts: LossOptions) -> LongTailLoss:
    return LogitAdjustedLoss(counts, opts, tau=1.0)


@LOSSES.register("logit-adjust")
def _logit_adjust(counts: torch.Tensor, opts: LossOptions) -> LongTailLoss:
    return LogitAdjustedLoss(counts, opts, tau=opts.la_tau)


def _check(name: str, counts: Sequence[int], opts: LossOptions) -> torch.Tensor:
    if len(counts) < 1:
        raise ConfigError("class_counts is empty; give one training count per class")
    tensor = torch.as_tensor(list(counts), dtype=torch.float64)  # (K,)
    if name != "ce" or opts.drw_epoch is not None:  # every other loss divides by the counts
        if not bool((tensor > 0).all()) or not bool(torch.isfinite(tensor).all()):
            raise ConfigError(f"loss {name!r} needs a positive training count for every class, "
                              f"got {list(counts)}; drop empty classes from the data")
    for label, beta in (("cb_beta", opts.cb_beta), ("drw_beta", opts.drw_beta)):
        if not 0.0 <= beta < 1.0:
            raise ConfigError(f"{label} must be in [0, 1), got {beta}; 0.9999 is usual")
    if not 0.0 <= opts.label_smoothing < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1), got {opts.label_smoothing}; 0.1 is usual")
    if opts.focal_gamma < 0:
        raise ConfigError(f"focal_gamma must be >= 0, got {opts.focal_gamma}")
    if opts.ldam_max_m < 0 or opts.ldam_s <= 0:
        raise ConfigError(f"ldam needs ldam_max_m >= 0 and ldam_s > 0, got "
                          f"{opts.ldam_max_m} and {opts.ldam_s}")
    if opts.la_tau < 0 or not math.isfinite(opts.la_tau):
        raise ConfigError(f"la_tau must be a finite value >= 0, got {opts.la_tau}")
    if name == "balanced-softmax" and opts.la_tau != 1.0:
        raise ConfigError("balanced-softmax is logit adjustment with tau = 1; "
                          "use loss 'logit-adjust' for la_tau != 1")
    if opts.drw_epoch is not None:
        if name not in DRW_LOSSES:
            raise ConfigError(f"deferred re-weighting works with {', '.join(DRW_LOSSES)}; "
                              f"{name!r} already re-balances: drop drw_epoch")
        if opts.drw_epoch < 0:
            raise ConfigError(f"drw_epoch must be >= 0, got {opts.drw_epoch}")
    return tensor


def make_loss(name: str, class_counts: Sequence[int], *, focal_gamma: float = 1.0,
              cb_beta: float = 0.9999, ldam_max_m: float = 0.5, ldam_s: float = 30.0,
              la_tau: float = 1.0, drw_epoch: int | None = None,
              drw_beta: float = 0.9999, label_smoothing: float = 0.0) -> LongTailLoss:
    """Loss `name` for training counts `class_counts` (K,); see LossOptions for the options.
    Unknown names and impossible options raise ConfigError. Move it with `.to(device)`."""
    factory = LOSSES.get(name)
    opts = LossOptions(focal_gamma=focal_gamma, cb_beta=cb_beta, ldam_max_m=ldam_max_m,
                       ldam_s=ldam_s, la_tau=la_tau, drw_epoch=drw_epoch, drw_beta=drw_beta,
                       label_smoothing=label_smoothing)
    counts = _check(name, class_counts, opts)
    return factory(counts, opts)
