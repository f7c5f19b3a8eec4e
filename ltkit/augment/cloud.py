"""Feature cloud (Liu et al., CVPR 2020): widen each tail class to the head classes' spread.

Angular variance. For the pooled features x_i of class k (all images, all views), with unit
directions u_i = x_i / ||x_i|| and the class centre c_k = normalize(mean_i u_i):

    V_k = mean_i theta_i^2,   theta_i = arccos(u_i . c_k)   (radians^2)

the mean squared angle between a normalised feature and the normalised class centre. The
target is V* = the mean of V_k over the head classes.

Cloud. A generated feature of tail image x (direction u at angle alpha from its class centre
c) rotates u by phi in a random direction v orthogonal to both u and c,

    u' = cos(phi) u + sin(phi) v,   so   cos(beta) = cos(phi) cos(alpha)   exactly

(spherical Pythagoras; beta is the angle of u' to c), and keeps the norm ||x||. The rotation
angle is phi = min(s_t |z|, pi/2) with z ~ N(0, 1) and one scale s_t per tail class,
calibrated once by bisection so that the expected mean squared angle of the class's cloud,
E[beta^2] over its images, equals V*. A tail class already as spread as V* gets s_t = 0 (its
cloud collapses onto its real images); one that cannot reach V* within phi <= pi/2 gets the
largest scale tried.

Batch (as FSA's): [Nt real tail | Nt * Na cloud features labelled with their tail class |
Nt(1+Na) head]. These batches train a cosine classifier with an additive angular margin
(``needs_cosine``): the fine-tuning stage applies the margin, not this module.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ltkit.augment import AUGMENTERS, AugmentConfig, FeatureBank, balanced_tail_count

CALIBRATION_QUANTILES = 64   # half-normal quantiles standing in for |z| during calibration
BISECTION_STEPS = 50         # halvings of the scale interval (to ~1e-13 of its width)
MAX_SCALE = 200.0            # upper end of the scale search (phi saturates at pi/2 anyway)


def angular_statistics(pooled: torch.Tensor, labels: torch.Tensor,
                       num_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, C) features and (N,) labels -> (centres (K, C) unit, V (K,), angle of each (N,))."""
    u = F.normalize(pooled.float(), dim=1)  # (N, C)
    sums = torch.zeros(num_classes, u.shape[1], device=u.device).index_add_(0, labels, u)  # (K, C)
    centres = F.normalize(sums, dim=1)  # (K, C)
    angle = torch.arccos((u * centres[labels]).sum(1).clamp(-1.0, 1.0))  # (N,)
    count = torch.bincount(labels, minlength=num_classes).clamp_min(1)  # (K,)
    variance = torch.zeros(num_classes, device=u.device).index_add_(0, labels, angle**2) / count
    return centres, variance, angle


def expected_sq_angle(alpha: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor,
                      num_classes: int) -> torch.Tensor:
    """(K,) E[beta^2] per class when each image (angle ``alpha`` (P,)) is rotated with ``scale`` (K,)."""
    q = (torch.arange(CALIBRATION_QUANTILES, device=alpha.device, dtype=torch.float64) + 0.5)
    z = math.sqrt(2.0) * torch.erfinv(q / CALIBRATION_QUANTILES)  # (Q,) half-normal quantiles
    phi = (scale[labels][:, None] * z[None]).clamp(max=math.pi / 2)  # (P, Q)
    beta = torch.arccos((torch.cos(phi) * torch.cos(alpha.double())[:, None]).clamp(-1.0, 1.0))
    per_image = (beta**2).mean(1)  # (P,)
    count = torch.bincount(labels, minlength=num_classes).clamp_min(1)  # (K,)
    zeros = torch.zeros(num_classes, device=alpha.device, dtype=torch.float64)
    return zeros.index_add_(0, labels, per_image) / count  # (K,)


def calibrate_scales(alpha: torch.Tensor, labels: torch.Tensor, target: float,
                     num_classes: int) -> torch.Tensor:
    """(K,) rotation scale per class whose E[beta^2] equals ``target`` (bisection, all classes at once)."""
    lo = torch.zeros(num_classes, device=alpha.device, dtype=torch.float64)
    hi = torch.full_like(lo, MAX_SCALE)
    for _ in range(BISECTION_STEPS):  # a loop over halvings, each over every class at once
        mid = (lo + hi) / 2
        below = expected_sq_angle(alpha, labels, mid, num_classes) < target  # (K,)
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    already = expected_sq_angle(alpha, labels, torch.zeros_like(lo), num_classes) >= target
    return torch.where(already, torch.zeros_like(lo), (lo + hi) / 2).float()  # (K,)


def rotate_away(x: torch.Tensor, centre: torch.Tensor, phi: torch.Tensor,
                generator: torch.Generator) -> torch.Tensor:
    """Rotate each row of ``x`` (A, C) by ``phi`` (A,) orthogonally to itself and ``centre`` (A, C)."""
    norm = x.norm(dim=1, keepdim=True)  # (A, 1)
    u = F.normalize(x, dim=1)  # (A, C)
    w = centre - (centre * u).sum(1, keepdim=True) * u  # (A, C) centre's part orthogonal to u
    e2 = F.normalize(w, dim=1)  # (A, C); zero where the centre is parallel to u
    g = torch.randn(x.shape, generator=generator, device=x.device)  # (A, C)
    g = g - (g * u).sum(1, keepdim=True) * u
    v = F.normalize(g - (g * e2).sum(1, keepdim=True) * e2, dim=1)  # (A, C) unit, orthogonal to u and c
    return norm * (torch.cos(phi)[:, None] * u + torch.sin(phi)[:, None] * v)  # (A, C)


@AUGMENTERS.register("cloud")
class FeatureCloud:
    needs_spatial = False
    needs_cosine = True
    balanced_batches = True

    def __init__(self, bank: FeatureBank, cfg: AugmentConfig):
        self.bank, self.cfg = bank, cfg
        self.nt = balanced_tail_count(cfg.batch_size, cfg.na)
        K, V = bank.num_classes, bank.num_views
        # one-time statistics on the CPU, where index_add_ sums in a fixed order (bit-repeatable)
        flat = bank.pooled.reshape(-1, bank.feature_dim).cpu()  # (N * V, C)
        flat_labels = bank.labels.repeat_interleave(V).cpu()  # (N * V,)
        centres, variance, angle = angular_statistics(flat, flat_labels, K)
        self.target = float(variance[bank.head_classes.cpu()].mean())  # V*, radians^2
        in_tail = bank.tail_row.cpu()[flat_labels] >= 0  # (N * V,)
        scale = calibrate_scales(angle[in_tail], flat_labels[in_tail], self.target, K)  # (K,)
        self.centres, self.variance = centres.to(bank.device), variance.to(bank.device)
        self.scale = scale.to(bank.device)

    def batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        bank, cfg, nt, na = self.bank, self.cfg, self.nt, self.cfg.na
        tail = bank.draw_tail(nt, cfg.tail_draw, generator)  # (Nt,)
        real = bank.pooled[tail, bank.draw_views(nt, generator)]  # (Nt, C)
        tail_cls = bank.labels[tail]  # (Nt,)
        owner = torch.arange(nt, device=bank.device).repeat_interleave(na)  # (A,)
        cls = tail_cls[owner]  # (A,)
        z = torch.randn(nt * na, generator=generator, device=bank.device).abs()  # (A,)
        phi = (self.scale[cls] * z).clamp(max=math.pi / 2)  # (A,)
        cloud = rotate_away(real[owner], self.centres[cls], phi, generator)  # (A, C)
        head = bank.draw_head(nt * (1 + na), cfg.head_draw, generator)  # (Nt(1+Na),)
        head_view = bank.draw_views(nt * (1 + na), generator)
        features = torch.cat([real, cloud, bank.pooled[head, head_view]])  # (B, C)
        return features, torch.cat([tail_cls, cls, bank.labels[head]])  # (B, C), (B,)
