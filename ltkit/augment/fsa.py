"""Feature-space augmentation, Chu et al. 2020, Algorithm 1, as batched tensor work.

One batch (B = 2 * Nt * (1 + Na)):
1. Nt real tail images (``tail_draw``: uniform over tail images, the literal "draw one sample
   from tail classes", or class-balanced over tail classes), a random view each;
2. for each, Na augmented features, each from one of the tail class c's Nf confusing classes
   (Na = Nf: one per confusing class, as in Algorithm 1; Na < Nf: Na distinct ones drawn
   uniformly for each tail image, the text's "we sample Na images from its Nf confusing
   classes"; Na > Nf: slot j uses ``confusing[c, j mod Nf]``, every class alike), and one
   image u of that class, uniform within the class;
   - class-specific locations of the tail image: CAM > tau_s (strict, as Eq. 2 / line 7),
   - class-generic locations of u: its own-label CAM < tau_g (strict, line 12),
   - gamma ~ U[0, 1) (``gamma_min`` > 0: U[gamma_min, 1), an option beside the paper);
     round(gamma * L) specific and L - round(gamma * L) generic location
     vectors drawn with repetition (uniform over the valid locations) and averaged: one pooled
     feature labelled with the tail class. Locations whose vector is all-zero are never drawn.
3. Nt * (1 + Na) head images (``head_draw``), a random view each.
Rows come out in that order: [Nt tail | Nt * Na augmented (tail-major) | Nt(1+Na) head].

Empty location sets (not in the paper; our rule): a map with no non-zero location past its
threshold falls back to its single non-zero location of highest CAM (specific) or lowest
CAM (generic), ties to the first location. A map with no non-zero location vector at all
contributes none: all L vectors come from the other map (a tail map of zeros gives a purely
generic feature, a confusing map of zeros a purely specific one).

No Python loop runs per sample: the drawable locations of every (image, view) are tabulated
once per augmenter (`LocationTable`, vectorised over all images); a batch gathers rows of
those tables, maps one (A, L) tensor of uniforms onto the drawable locations (uniform with
repetition) and gathers the vectors in one call.
"""

from __future__ import annotations

import itertools

import torch

from ltkit.augment import AUGMENTERS, DRAW, TAU_G, TAU_S, AugmentConfig, FeatureBank, balanced_tail_count
from ltkit.errors import ConfigError


def location_mask(cams: torch.Tensor, nonzero: torch.Tensor, tau: float,
                  side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The locations a draw may use, with the empty-set fallback.

    ``cams`` (M, L) float32 and ``nonzero`` (M, L) bool -> (mask (M, L) bool, usable (M,)
    bool). ``side`` "specific": CAM > tau; "generic": CAM < tau. ``usable`` is False only for
    a map with no non-zero location vector; its mask is then all True (never used).
    """
    if side == "specific":
        valid = (cams > tau) & nonzero  # (M, L)
        fallback = cams.masked_fill(~nonzero, float("-inf")).argmax(1)  # (M,) highest CAM
    else:
        valid = (cams < tau) & nonzero  # (M, L)
        fallback = cams.masked_fill(~nonzero, float("inf")).argmin(1)  # (M,) lowest CAM
    usable = nonzero.any(1)  # (M,)
    one_hot = torch.zeros_like(valid).scatter_(1, fallback[:, None], True)  # (M, L)
    mask = torch.where(valid.any(1, keepdim=True), valid, one_hot)  # (M, L)
    return mask | ~usable[:, None], usable


class LocationTable:
    """Per (image, view), for one threshold: its drawable locations listed first (in location
    order), how many there are, and whether the map has any non-zero vector at all.

    Built once per augmenter (thresholds are fixed), in row chunks of bounded memory, so a
    batch only gathers rows of it: a draw is a uniform rank among the drawable locations.
    """

    CHUNK = 1 << 16  # (image, view) rows per construction step

    def __init__(self, cams: torch.Tensor, nonzero: torch.Tensor, tau: float, side: str):
        N, V, L = cams.shape
        dtype = torch.int16 if L <= torch.iinfo(torch.int16).max else torch.int32
        flat_cams, flat_nz = cams.reshape(-1, L), nonzero.reshape(-1, L)  # (N * V, L)
        order, count, usable = [], [], []
        for start in range(0, N * V, self.CHUNK):  # a loop over chunks, not over samples
            mask, ok = location_mask(flat_cams[start:start + self.CHUNK],
                                     flat_nz[start:start + self.CHUNK], tau, side)  # (b, L), (b,)
            order.append(torch.argsort((~mask).to(torch.uint8), dim=1, stable=True).to(dtype))
            count.append(mask.sum(1))
            usable.append(ok)
        self.order = torch.cat(order).view(N, V, L)  # (N, V, L) drawable locations first
        self.count = torch.cat(count).view(N, V)  # (N, V) >= 1
        self.usable = torch.cat(usable).view(N, V)  # (N, V)


def _auto_grid() -> tuple[dict, ...]:
    """The points ``auto`` chooses among on validation (`ltkit.augment_auto`). First the off
    point: ``none``'s batches (the same balanced batches with nothing synthesised, the paper's
    "No Aug") with the default draws, which ``auto`` keeps unless an augmenting point beats it
    on validation by more than the validation noise. Then two threshold pairs (the default,
    and a stricter one: fewer, surer specific locations, only the least class-like generic
    ones) x three mixing ranges (the paper's U(0, 1); U(0.5, 1), mostly the tail image's own
    locations; U(0.9, 1), nearly the real tail feature), then the default with instance draws
    (the literal reading of Algorithm 1)."""
    points = tuple({"tau_s": s, "tau_g": g, "gamma_min": m, "tail_draw": DRAW, "head_draw": DRAW}
                   for (s, g), m in itertools.product(((TAU_S, TAU_G), (0.7, 0.1)), (0.0, 0.5, 0.9)))
    off = {"augment": "none", **points[0]}
    return (off, *points, {**points[0], "tail_draw": "instance", "head_draw": "instance"})


@AUGMENTERS.register("fsa")
class FeatureSpaceAugmenter:
    needs_spatial = True
    needs_cosine = False
    balanced_batches = True
    auto_grid = _auto_grid()

    def __init__(self, bank: FeatureBank, cfg: AugmentConfig):
        if bank.spatial.num_locations < 2:  # nothing to mix: a draw would copy one image's vector
            raise ConfigError("the store's feature maps are 1x1: FSA mixes the class-specific and "
                              "class-generic locations of a map, and a 1x1 map has one location "
                              "(an augmented feature would be a confusing image's feature with a "
                              "tail label); extract with a backbone that keeps spatial maps (a CIFAR "
                              "ResNet, or a backbone trained with a larger --image-size), or use "
                              "--augment none / cloud")
        self.bank, self.cfg = bank, cfg
        self.nt = balanced_tail_count(cfg.batch_size, cfg.na)  # real tail images per batch
        self.nf = bank.confusing.shape[1]
        self.slot_rank = torch.arange(cfg.na, device=bank.device) % self.nf  # (Na,) Na >= Nf: slot j's rank
        self.slots = torch.arange(bank.spatial.num_locations, device=bank.device)[None]  # (1, L)
        self.specific = LocationTable(bank.cams, bank.nonzero, cfg.tau_s, "specific")
        self.generic = LocationTable(bank.cams, bank.nonzero, cfg.tau_g, "generic")

    GATHER_BYTES = 64 << 20  # bound on the vectors one draw gathers: (A, L, C) float32

    def draw(self, generator: torch.Generator, batches: int = 1) -> dict[str, torch.Tensor]:
        """``batches`` batches drawn at once (one set of tensor calls for all of them) and
        everything drawn to make them (the tests and benchmarks read these). Rows: all tail
        rows, then all augmented rows (tail-major), then all head rows; `batches` splits them.
        Algorithm 1's draws are here; how an augmented sample is made of them is `mix`."""
        bank, cfg, na = self.bank, self.cfg, self.cfg.na
        nt = self.nt * batches
        tail = bank.draw_tail(nt, cfg.tail_draw, generator)  # (Nt,)
        tail_view = bank.draw_views(nt, generator)  # (Nt,)
        tail_cls = bank.labels[tail]  # (Nt,)
        conf_cls, conf, conf_view, gamma = self.draw_confusing(tail_cls, generator)  # (Nt, Na), (A,) x 3
        owner = torch.arange(nt, device=bank.device).repeat_interleave(na)  # (A,) tail row of each
        augmented, mixed = self.mix(tail[owner], tail_view[owner], conf, conf_view, gamma, generator)
        head = bank.draw_head(nt * (1 + na), cfg.head_draw, generator)  # (Nt(1+Na),)
        head_view = bank.draw_views(nt * (1 + na), generator)  # (Nt(1+Na),)
        features = torch.cat([bank.pooled[tail, tail_view], augmented,
                              bank.pooled[head, head_view]])  # (B, C) or (B, C, H, W)
        labels = torch.cat([tail_cls, tail_cls[owner], bank.labels[head]])  # (B,)
        return {"features": features, "labels": labels, "tail": tail, "tail_view": tail_view,
                "confusing": conf, "confusing_view": conf_view, "confusing_class": conf_cls,
                "gamma": gamma, **mixed, "head": head, "head_view": head_view}

    def mix(self, t_img: torch.Tensor, t_view: torch.Tensor, conf: torch.Tensor, conf_view: torch.Tensor,
            gamma: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The (A, C) augmented features of A (tail image, view; confusing image, view; gamma)
        draws, Algorithm 1: round(gamma L) class-specific location vectors of the tail map and the
        rest class-generic ones of the confusing map, drawn with repetition, averaged; and what
        was drawn to make them."""
        bank = self.bank
        L = bank.spatial.num_locations
        spec, gen = self.specific, self.generic
        n_spec = torch.round(gamma * L).long()  # (A,)
        n_spec = torch.where(spec.usable[t_img, t_view],
                             torch.where(gen.usable[conf, conf_view], n_spec, L), 0)  # empty-map rule
        take_spec = self.slots < n_spec[:, None]  # (A, L)
        # slot l < n_spec draws a specific location of the tail map, the rest generic ones of
        # the confusing map: a uniform rank among that map's drawable locations
        drawable = torch.cat([spec.order[t_img, t_view], gen.order[conf, conf_view]], 1)  # (A, 2L)
        k = torch.where(take_spec, spec.count[t_img, t_view][:, None],
                        gen.count[conf, conf_view][:, None])  # (A, L)
        u = torch.rand(len(t_img), L, generator=generator, device=bank.device)  # (A, L)
        rank = torch.minimum((u * k).long(), k - 1) + torch.where(take_spec, 0, L)  # (A, L)
        loc = drawable.gather(1, rank).long()  # (A, L)
        image = torch.where(take_spec, t_img[:, None], conf[:, None])  # (A, L)
        view = torch.where(take_spec, t_view[:, None], conf_view[:, None])  # (A, L)
        augmented = bank.spatial.mean(image, view, loc)  # (A, C) mean of each row's L vectors
        return augmented, {"n_specific": n_spec, "take_specific": take_spec, "location": loc}

    def draw_confusing(self, tail_cls: torch.Tensor, generator: torch.Generator):
        """For (Nt,) tail classes: the confusing class of each of their Na slots (Nt, Na), an
        image of it and a view (A,) each, A = Nt * Na, and each augmented sample's gamma (A,)."""
        bank, cfg, na, nt = self.bank, self.cfg, self.cfg.na, len(tail_cls)
        ranks = self.slot_rank.expand(nt, na)  # (Nt, Na) confusing-class rank of each slot
        if na < self.nf:  # Na of the Nf, distinct, uniform for each tail image
            ranks = torch.rand(nt, self.nf, generator=generator, device=bank.device).argsort(1)[:, :na]
        conf_cls = bank.confusing[bank.tail_row[tail_cls]].gather(1, ranks)  # (Nt, Na)
        conf = bank.draw_from_classes(conf_cls.flatten(), generator)  # (A,)
        conf_view = bank.draw_views(nt * na, generator)  # (A,)
        gamma = torch.rand(nt * na, generator=generator, device=bank.device)  # (A,) U[0, 1)
        return conf_cls, conf, conf_view, cfg.gamma_min + (1.0 - cfg.gamma_min) * gamma  # U[gamma_min, 1)

    def batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.draw(generator)
        return out["features"], out["labels"]

    def batches(self, generator: torch.Generator, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``count`` batches, drawn several at a time: per-call overhead, not tensor work, is
        what a batch of 128 pooled features costs, so drawing k at once is ~k times cheaper."""
        c, L = self.bank.pooled.shape[-1], self.bank.spatial.num_locations
        per_batch = self.nt * self.cfg.na * L * c * 4
        k = max(1, min(count, self.GATHER_BYTES // max(per_batch, 1)))
        out: list[tuple[torch.Tensor, torch.Tensor]] = []
        while len(out) < count:
            n = min(k, count - len(out))
            d = self.draw(generator, batches=n)
            t, a, h = self.nt, self.nt * self.cfg.na, self.nt * (1 + self.cfg.na)
            i = torch.arange(n)[:, None]  # (n, 1) batch of each row below
            rows = torch.cat([i * t + torch.arange(t), n * t + i * a + torch.arange(a),
                              n * (t + a) + i * h + torch.arange(h)], 1)  # (n, B) batch-major
            rows = rows.flatten().to(d["features"].device)
            size = t + a + h
            out += zip(d["features"][rows].split(size), d["labels"][rows].split(size))
        return out
