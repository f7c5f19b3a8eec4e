"""Losses against hand computations with plain `math` on small logits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ltkit.errors import ConfigError
from ltkit.losses import LOSSES, effective_number_weights, make_loss
from ltkit.models import NormedLinear

COUNTS = [100, 10, 1]
LOGITS = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-0.5, 1.5, 0.0], [1.0, -1.0, 2.0]]
TARGETS = [0, 2, 1, 2]


def _ce(row: list[float], y: int) -> float:
    return -math.log(math.exp(row[y]) / sum(math.exp(v) for v in row))


def _mean(values: list[float], weights: list[float] | None = None) -> float:
    weights = weights or [1.0] * len(values)
    return sum(w * v for w, v in zip(weights, values)) / sum(weights)


def _effective_weights(beta: float) -> list[float]:
    raw = [(1 - beta) / (1 - beta**n) for n in COUNTS]
    return [w / sum(raw) * len(COUNTS) for w in raw]


def _loss(name: str, **opts) -> float:
    loss = make_loss(name, COUNTS, **opts)
    return loss(torch.tensor(LOGITS), torch.tensor(TARGETS)).item()


def test_ce():
    expected = _mean([_ce(r, y) for r, y in zip(LOGITS, TARGETS)])
    assert _loss("ce") == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0])
def test_focal(gamma):
    terms = []
    for row, y in zip(LOGITS, TARGETS):
        p = math.exp(-_ce(row, y))
        terms.append(-((1 - p) ** gamma) * math.log(p))
    assert _loss("focal", focal_gamma=gamma) == pytest.approx(_mean(terms), rel=1e-5)


def test_effective_number_weights_by_hand():
    # beta = 0.9: raw weights 0.1/(1-0.9^100) ~ 0.1, 0.1/(1-0.9^10) ~ 0.1535, 0.1/0.1 = 1
    weights = effective_number_weights(torch.tensor(COUNTS), 0.9)
    assert weights.tolist() == pytest.approx(_effective_weights(0.9), rel=1e-5)
    assert weights.sum().item() == pytest.approx(3.0, rel=1e-6)
    assert weights[2] / weights[0] == pytest.approx(1 / 0.1, rel=1e-3)
    assert effective_number_weights(torch.tensor(COUNTS), 0.0).tolist() == [1.0, 1.0, 1.0]


def test_class_balanced():
    w = _effective_weights(0.9)
    expected = _mean([_ce(r, y) for r, y in zip(LOGITS, TARGETS)], [w[y] for y in TARGETS])
    assert _loss("cb", cb_beta=0.9) == pytest.approx(expected, rel=1e-5)


def test_ldam_margins_and_value():
    loss = make_loss("ldam", COUNTS, ldam_max_m=0.5, ldam_s=30.0)
    # m_c = C / n_c^(1/4) with the rarest class at max_m: 0.5 * [100^-1/4, 10^-1/4, 1]
    assert loss.margins.tolist() == pytest.approx([0.5 / 100**0.25, 0.5 / 10**0.25, 0.5], rel=1e-6)
    cosines = [[0.9, 0.1, -0.2], [0.0, 0.3, 0.25], [-0.5, 0.6, 0.55], [0.2, -0.1, 0.4]]
    terms = []
    for cos, y in zip(cosines, TARGETS):
        row = [30.0 * (c - (loss.margins[y].item() if j == y else 0.0)) for j, c in enumerate(cos)]
        terms.append(_ce(row, y))
    logits = 30.0 * torch.tensor(cosines)  # what the cosine head (scale 30) outputs
    assert loss(logits, torch.tensor(TARGETS)).item() == pytest.approx(_mean(terms), rel=1e-5)


def test_ldam_on_the_cosine_head_is_the_reference_formula():
    torch.manual_seed(0)
    head, x, y = NormedLinear(8, 3, scale=30.0), torch.randn(6, 8), torch.tensor([0, 1, 2, 2, 1, 0])
    loss = make_loss("ldam", COUNTS)
    cos = F.normalize(x, dim=1) @ F.normalize(head.weight, dim=1).T  # (6, 3), unscaled
    reference = F.cross_entropy(30.0 * (cos - loss.margins * F.one_hot(y, 3)), y)
    torch.testing.assert_close(loss(head(x), y), reference)


@pytest.mark.parametrize("name,tau", [("balanced-softmax", 1.0), ("logit-adjust", 0.5),
                                      ("logit-adjust", 2.0)])
def test_logit_adjustment(name, tau):
    log_prior = [math.log(n / sum(COUNTS)) for n in COUNTS]
    terms = [_ce([v + tau * lp for v, lp in zip(r, log_prior)], y) for r, y in zip(LOGITS, TARGETS)]
    assert _loss(name, la_tau=tau) == pytest.approx(_mean(terms), rel=1e-5)


def test_balanced_softmax_is_logit_adjustment_with_tau_one_and_tau_zero_is_ce():
    assert _loss("balanced-softmax") == pytest.approx(_loss("logit-adjust", la_tau=1.0))
    assert _loss("logit-adjust", la_tau=0.0) == pytest.approx(_loss("ce"))


@pytest.mark.parametrize("name", ["ce", "focal", "ldam"])
def test_drw_switches_on_at_the_boundary_epoch(name):
    loss = make_loss(name, COUNTS, drw_epoch=3, drw_beta=0.9)
    plain = make_loss(name, COUNTS)
    logits, targets = torch.tensor(LOGITS), torch.tensor(TARGETS)
    per_sample = plain.per_sample(logits, targets).tolist()
    w = _effective_weights(0.9)
    weighted = _mean(per_sample, [w[y] for y in TARGETS])
    assert loss(logits, targets).item() == pytest.approx(_mean(per_sample), rel=1e-5)  # epoch 0
    for epoch, expected in ((2, _mean(per_sample)), (3, weighted), (4, weighted),
                            (0, _mean(per_sample))):
        loss.set_epoch(epoch)
        assert loss(logits, targets).item() == pytest.approx(expected, rel=1e-5), epoch
    assert weighted != pytest.approx(_mean(per_sample), rel=1e-3)  # the switch is visible


def test_drw_ce_matches_weighted_cross_entropy():
    loss = make_loss("ce", COUNTS, drw_epoch=0)
    logits, targets = torch.tensor(LOGITS), torch.tensor(TARGETS)
    expected = F.cross_entropy(logits, targets, weight=effective_number_weights(
        torch.tensor(COUNTS), 0.9999))
    torch.testing.assert_close(loss(logits, targets), expected)


def test_focal_gradient_stays_finite_on_confident_logits():
    logits = torch.tensor([[200.0, 0.0, 0.0], [0.0, 50.0, 0.0]], requires_grad=True)
    make_loss("focal", COUNTS, focal_gamma=0.5)(logits, torch.tensor([0, 1])).backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_backpropagates_and_keeps_its_tensors_in_buffers(name):
    loss = make_loss(name, COUNTS)
    logits = torch.tensor(LOGITS, requires_grad=True)
    value = loss(logits, torch.tensor(TARGETS))
    value.backward()
    assert value.dim() == 0 and torch.isfinite(value) and torch.isfinite(logits.grad).all()
    assert not list(loss.parameters())
    assert all(isinstance(b, torch.Tensor) for b in loss.buffers())  # move with .to(device)
    assert torch.isfinite(loss(logits.double(), torch.tensor(TARGETS)))


@pytest.mark.parametrize("name,opts,message", [
    ("focal", {"focal_gamma": -0.5}, "focal_gamma"),
    ("cb", {"cb_beta": 1.0}, "cb_beta"),
    ("cb", {"cb_beta": -0.1}, "cb_beta"),
    ("ce", {"drw_epoch": 5, "drw_beta": 1.0}, "drw_beta"),
    ("ce", {"drw_epoch": -1}, "drw_epoch"),
    ("cb", {"drw_epoch": 5}, "deferred re-weighting works with ce, focal, ldam"),
    ("balanced-softmax", {"drw_epoch": 5}, "deferred"),
    ("ldam", {"ldam_s": 0.0}, "ldam_s"),
    ("ldam", {"ldam_max_m": -0.1}, "ldam_max_m"),
    ("logit-adjust", {"la_tau": -1.0}, "la_tau"),
    ("balanced-softmax", {"la_tau": 2.0}, "logit-adjust"),
])
def test_bad_options_raise_config_errors(name, opts, message):
    with pytest.raises(ConfigError, match=message):
        make_loss(name, COUNTS, **opts)


def test_bad_names_counts_and_shapes():
    with pytest.raises(ConfigError, match="balanced-softmax, cb, ce, focal"):
        make_loss("softmax", COUNTS)
    with pytest.raises(ConfigError, match="positive training count"):
        make_loss("ldam", [10, 0, 1])
    with pytest.raises(ConfigError, match="empty"):
        make_loss("ce", [])
    empty_class_ce = make_loss("ce", [10, 0, 1])(torch.tensor(LOGITS), torch.tensor(TARGETS))
    assert empty_class_ce.item() == pytest.approx(_loss("ce"))  # plain CE needs no counts
    with pytest.raises(ConfigError, match="built for 3 classes"):
        make_loss("ce", COUNTS)(torch.zeros(2, 4), torch.tensor([0, 1]))


# ---- soft targets (mixup / cutmix) and label smoothing ---------------------------------------

MIX = [(0, 1, 0.7), (2, 0, 0.4), (1, 1, 1.0), (2, 1, 0.55)]  # (y_a, y_b, lam) per row of LOGITS


def _soft_targets() -> torch.Tensor:
    soft = torch.zeros(len(MIX), len(COUNTS))
    for i, (a, b, lam) in enumerate(MIX):
        soft[i, a] += lam
        soft[i, b] += 1.0 - lam
    return soft  # (4, 3): what MixUp / CutMix give, lam * onehot(a) + (1 - lam) * onehot(b)


def _focal(row: list[float], y: int, gamma: float) -> float:
    p = math.exp(-_ce(row, y))
    return -((1 - p) ** gamma) * math.log(p)


@pytest.mark.parametrize("name,opts", [("ce", {}), ("cb", {"cb_beta": 0.9}), ("focal", {"focal_gamma": 2.0}),
                                       ("ldam", {}), ("balanced-softmax", {}), ("logit-adjust", {"la_tau": 0.5}),
                                       ("ce", {"drw_epoch": 0}), ("ldam", {"drw_epoch": 0})])
def test_one_hot_soft_targets_give_the_hard_loss(name, opts):
    loss = make_loss(name, COUNTS, **opts)
    logits, targets = torch.tensor(LOGITS) * 3, torch.tensor(TARGETS)
    torch.testing.assert_close(loss(logits, F.one_hot(targets, 3).float()), loss(logits, targets))


def test_mixed_targets_by_hand():
    """Each loss's mix of its two labels' losses, as mixup defines it (module docstring)."""
    soft, logits = _soft_targets(), torch.tensor(LOGITS)
    mixed = {  # loss name -> per-row function of (row, label) -> loss with that label
        "ce": _ce,
        "focal": lambda r, y: _focal(r, y, 2.0),
        "balanced-softmax": lambda r, y: _ce([v + math.log(n / sum(COUNTS)) for v, n in zip(r, COUNTS)], y),
    }
    opts = {"focal": {"focal_gamma": 2.0}}
    for name, per_label in mixed.items():
        expected = _mean([lam * per_label(r, a) + (1 - lam) * per_label(r, b) for r, (a, b, lam) in zip(LOGITS, MIX)])
        assert make_loss(name, COUNTS, **opts.get(name, {}))(logits, soft).item() == pytest.approx(expected, rel=1e-5)
    # cb: the class weights mixed like the losses, sum t w l / sum t w
    w = _effective_weights(0.9)
    num = sum(lam * w[a] * _ce(r, a) + (1 - lam) * w[b] * _ce(r, b) for r, (a, b, lam) in zip(LOGITS, MIX))
    den = sum(lam * w[a] + (1 - lam) * w[b] for a, b, lam in MIX)
    assert make_loss("cb", COUNTS, cb_beta=0.9)(logits, soft).item() == pytest.approx(num / den, rel=1e-5)


def test_ldam_with_mixed_targets_mixes_the_margins_by_hand():
    loss = make_loss("ldam", COUNTS, ldam_max_m=0.5, ldam_s=30.0)
    m = [0.5 / 100**0.25, 0.5 / 10**0.25, 0.5]
    cosines = [[0.9, 0.1, -0.2], [0.0, 0.3, 0.25], [-0.5, 0.6, 0.55], [0.2, -0.1, 0.4]]
    terms, soft = [], _soft_targets().tolist()
    for cos, t, (a, b, lam) in zip(cosines, soft, MIX):
        row = [30.0 * (c - m[j] * t[j]) for j, c in enumerate(cos)]  # margin m_c scaled by t_c
        terms.append(lam * _ce(row, a) + (1 - lam) * _ce(row, b))
    value = loss(30.0 * torch.tensor(cosines), torch.tensor(soft)).item()
    assert value == pytest.approx(_mean(terms), rel=1e-5)


def test_label_smoothing_by_hand_and_as_pytorch_defines_it():
    eps, k = 0.1, len(COUNTS)
    expected = _mean([(1 - eps) * _ce(r, y) + eps / k * sum(_ce(r, c) for c in range(k))
                      for r, y in zip(LOGITS, TARGETS)])
    assert _loss("ce", label_smoothing=eps) == pytest.approx(expected, rel=1e-5)
    reference = F.cross_entropy(torch.tensor(LOGITS), torch.tensor(TARGETS), label_smoothing=eps)
    assert _loss("ce", label_smoothing=eps) == pytest.approx(reference.item(), rel=1e-6)
    # on soft targets too: (1 - eps) * t + eps / K, as F.cross_entropy does
    soft = _soft_targets()
    reference = F.cross_entropy(torch.tensor(LOGITS), soft, label_smoothing=eps)
    value = make_loss("ce", COUNTS, label_smoothing=eps)(torch.tensor(LOGITS), soft)
    assert value.item() == pytest.approx(reference.item(), rel=1e-6)
    for name in LOSSES.names():  # every loss takes it, and it changes the value
        assert _loss(name, label_smoothing=eps) != pytest.approx(_loss(name), rel=1e-4), name


@pytest.mark.parametrize("eps", [-0.1, 1.0, float("nan")])
def test_label_smoothing_outside_zero_one_is_refused(eps):
    with pytest.raises(ConfigError, match="label_smoothing must be in"):
        make_loss("ce", COUNTS, label_smoothing=eps)


def test_soft_targets_of_another_shape_are_refused():
    with pytest.raises(ConfigError, match="soft targets of shape"):
        make_loss("ce", COUNTS)(torch.tensor(LOGITS), torch.zeros(4, 5))
