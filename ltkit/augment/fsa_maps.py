"""FSA on maps: Algorithm 1's mixing kept spatial, for heads that see the whole map (issue 15).

Algorithm 1 averages gamma * L class-specific vectors of a tail map and (1 - gamma) * L
class-generic vectors of a confusing map into one pooled feature: where each vector came from
is lost. For a spatial head ltkit makes an augmented *map* instead (the paper has no such
variant; this is ltkit's rule, measured beside the pooled reference in docs/phase2.md):

- location l of the augmented map is the tail map's own vector at l when l is class-specific
  for the tail image (CAM > tau_s) and is kept: each specific location is kept with
  probability gamma (gamma ~ U[gamma_min, 1) per augmented map, Algorithm 1's mixing ratio),
  the most specific one (highest CAM) always;
- every other location is filled from the confusing image: its vector at the same location
  when that location is class-generic for it (CAM < tau_g), else a class-generic vector of it
  drawn uniformly with repetition (Algorithm 1's "with repetition");
- all-zero vectors are never drawn, and the empty-set rules are FSA's (`location_mask`): a
  map with no location past its threshold uses its single most (least) specific non-zero
  location; a confusing map with no non-zero vector leaves the tail map as it is, and a tail
  map of zeros gives a purely generic map.

So the tail object stays where it was, in the confusing image's class-generic context:
gamma = 1 keeps every specific location, gamma -> 0 keeps only the most specific one.

`MapFeatureSpaceAugmenter` is what ``--head spatial --augment fsa`` trains with: Algorithm 1's
batch (Nt real tail maps, Nt * Na augmented maps, Nt(1+Na) head maps, drawn exactly as the
pooled FSA draws its images, confusing classes and gammas) with maps where the pooled
version has means.
"""

from __future__ import annotations

import torch

from ltkit.augment.fsa import FeatureSpaceAugmenter, location_mask


def mix_locations(tail_cams: torch.Tensor, tail_nonzero: torch.Tensor, conf_cams: torch.Tensor,
                  conf_nonzero: torch.Tensor, tau_s: float, tau_g: float, gamma: torch.Tensor,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each location of the augmented maps comes from (rule in the module docstring).

    Inputs (A, L): CAMs float32 and non-zero flags of the tail and confusing maps; ``gamma``
    (A,). Returns ``from_tail`` (A, L) bool — location l is the tail map's own vector at l —
    and ``loc`` (A, L) int64 — else the confusing map's vector at location ``loc[:, l]``.
    """
    A, L = tail_cams.shape
    device = tail_cams.device
    positions = torch.arange(L, device=device).expand(A, L)  # (A, L)
    specific, tail_usable = location_mask(tail_cams, tail_nonzero, tau_s, "specific")  # (A, L), (A,)
    generic, conf_usable = location_mask(conf_cams, conf_nonzero, tau_g, "generic")  # (A, L), (A,)
    top = tail_cams.masked_fill(~specific, float("-inf")).argmax(1)  # (A,) most specific location
    u = torch.rand(A, L, generator=generator, device=device)  # (A, L)
    keep = specific & (u < gamma[:, None])  # (A, L) each specific location kept with prob. gamma
    keep.scatter_(1, top[:, None], True)  # the most specific one always
    keep = torch.where(conf_usable[:, None], keep, specific | True)  # nothing generic: the tail map
    keep &= tail_usable[:, None]  # a tail map of zeros keeps nothing
    # the rest: the confusing map's own vector where it is generic, else a generic one drawn
    order = torch.argsort((~generic).to(torch.uint8), dim=1, stable=True)  # (A, L) generic first
    count = generic.sum(1, keepdim=True)  # (A, 1) >= 1
    r = torch.rand(A, L, generator=generator, device=device)  # (A, L)
    drawn = order.gather(1, torch.minimum((r * count).long(), count - 1))  # (A, L) uniform, with repetition
    loc = torch.where(generic, positions, drawn)  # (A, L)
    return keep, torch.where(keep, positions, loc)


class MapFeatureSpaceAugmenter(FeatureSpaceAugmenter):
    """FSA's batches as maps (B, C, H, W) for a spatial head; the bank's `pooled` is a
    `ltkit.heads.MapRows` (`ltkit.heads.map_bank`)."""

    def mix(self, t_img: torch.Tensor, t_view: torch.Tensor, conf: torch.Tensor, conf_view: torch.Tensor,
            gamma: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """As `FeatureSpaceAugmenter.mix`, the same draws made into maps (A, C, H, W) by
        `mix_locations`; ``keep`` / ``location`` say where each map's locations came from."""
        from ltkit.heads import to_maps

        bank, cfg = self.bank, self.cfg
        keep, loc = mix_locations(bank.cams[t_img, t_view], bank.nonzero[t_img, t_view],
                                  bank.cams[conf, conf_view], bank.nonzero[conf, conf_view],
                                  cfg.tau_s, cfg.tau_g, gamma, generator)  # (A, L), (A, L)
        image = torch.where(keep, t_img[:, None], conf[:, None])  # (A, L)
        view = torch.where(keep, t_view[:, None], conf_view[:, None])  # (A, L)
        augmented = to_maps(bank.spatial.vectors(image, view, loc), bank.pooled.hw)  # (A, C, H, W)
        return augmented, {"keep": keep, "location": loc}
