"""Class activation maps (Zhou et al., 2016) from a feature map and the classifier's weights.

The CAM of class k on a map F (C, H, W) is ``sum_c W[k, c] * F[c]`` (H, W): the classifier's
evidence for k at each location, before global average pooling. The bias only shifts the
map, so it is left out. The raw weight rows are used for every head, cosine included.

The store keeps each sample's CAM of its *own label*, min-max normalised to [0, 1] per
sample, so thresholds (FSA's tau_s, tau_g) mean the same on every sample. A map with no
contrast (constant, up to ``CONSTANT_RTOL``) carries no location information; it is stored
as all zeros: no location is class-specific, every location is class-generic.
"""

from __future__ import annotations

import torch

CONSTANT_RTOL = 1e-5  # a map is constant when max - min <= CONSTANT_RTOL * max(|max|, |min|)


def raw_cams(fmap: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) maps, (K, C) weights, (B,) labels -> (B, H, W) un-normalised CAMs."""
    rows = weight.float()[labels]  # (B, C): each sample's own-label weight row
    return torch.einsum("bc,bchw->bhw", rows, fmap.float())  # (B, H, W)


def normalize_cams(cams: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each map of (B, H, W) to [0, 1]; a constant map becomes all zeros."""
    flat = cams.float().flatten(1)  # (B, H*W)
    low = flat.min(dim=1, keepdim=True).values  # (B, 1)
    high = flat.max(dim=1, keepdim=True).values  # (B, 1)
    span = high - low  # (B, 1)
    scale = torch.maximum(high.abs(), low.abs())  # (B, 1)
    constant = span <= CONSTANT_RTOL * scale  # (B, 1); an all-zero map has span 0 <= 0
    out = (flat - low) / torch.where(constant, torch.ones_like(span), span)  # (B, H*W)
    out = torch.where(constant, torch.zeros_like(out), out).clamp_(0.0, 1.0)
    return out.view_as(cams)  # (B, H, W)


def label_cams(fmap: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """What the store keeps: each sample's own-label CAM, normalised. (B, H, W) float32."""
    return normalize_cams(raw_cams(fmap, weight, labels))
