"""Phase-II augmenters on constructed feature banks.

The FSA tests use maps whose every location vector is identifiable: the vector at location l
of image n (view v) is the one-hot e[(n * V + v) * L + l], so an augmented feature (a mean of
L such vectors) decodes exactly into which vectors were drawn, and how many times each.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ltkit.augment import AUGMENTERS, AugmentConfig, balanced_tail_count, bank_from_tensors, make_augmenter
from ltkit.augment.cloud import angular_statistics
from ltkit.augment.fsa import location_mask
from ltkit.errors import ConfigError

COUNTS = [6, 5, 4, 3, 2, 2]  # images per class; classes 0-2 head, 3-5 tail
HEAD, TAIL = [0, 1, 2], [3, 4, 5]
CONFUSING = [[0, 1, 2], [0, 1, 3], [3, 4, 0]]  # row i: confusing classes of TAIL[i]
TAU_S, TAU_G = 0.5, 0.25
# CAM patterns over L = 4 locations (2 x 2), cycled over images; 0.5 and 0.25 sit exactly on
# the thresholds, and pattern 2 has no location past either threshold (both fall back).
PATTERNS = [[1.0, 0.75, 0.5, 0.0], [0.5, 0.25, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5],
            [0.0, 1.0, 0.9, 0.25], [1.0, 0.6, 0.2, 0.0]]
ZERO_AT = {3: 1, 4: 0}  # pattern -> location whose vector is all-zero (highest CAM for pattern 4)


def identifiable_bank(views: int = 1, counts=COUNTS, cam_rows=None, device: str = "cpu"):
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))  # (N,)
    N, L = len(labels), 4
    C = N * views * L
    feats = torch.eye(C).reshape(N, views, L, C)  # (N, V, L, C): vector (n, v, l) = one-hot
    cams = torch.zeros(N, views, L)
    for n in range(N):
        for v in range(views):
            p = (n + v) % len(PATTERNS)
            cams[n, v] = torch.tensor(cam_rows[n] if cam_rows else PATTERNS[p])
            if cam_rows is None and p in ZERO_AT:
                feats[n, v, ZERO_AT[p]] = 0.0
    maps = feats.transpose(-1, -2).reshape(N, views, C, 2, 2)  # (N, V, C, H, W)
    return bank_from_tensors(labels=labels, pooled=feats.mean(2), head_classes=HEAD,
                             tail_classes=TAIL, confusing=CONFUSING, num_classes=len(counts),
                             features=maps, cams=cams.reshape(N, views, 2, 2), device=device)


def allowed(bank, n: int, v: int, tau: float, side: str) -> set[int]:
    """The locations Algorithm 1 may draw from, by the documented rule, one location at a time."""
    cam, nz = bank.cams[n, v].cpu().tolist(), bank.nonzero[n, v].cpu().tolist()
    past = (lambda c: c > tau) if side == "specific" else (lambda c: c < tau)
    valid = {l for l in range(4) if past(cam[l]) and nz[l]}
    if valid:
        return valid
    live = [l for l in range(4) if nz[l]]
    pick = max if side == "specific" else min
    best = pick(cam[l] for l in live)
    return {next(l for l in live if cam[l] == best)}


def decode(bank, feature: torch.Tensor) -> torch.Tensor:
    """(C,) augmented feature -> (N, V, L) how many times each location vector was drawn."""
    counts = feature.cpu() * 4
    assert torch.equal(counts, counts.round()), "not a mean of 4 one-hot location vectors"
    return counts.round().long().reshape(bank.labels.numel(), bank.num_views, 4)


CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("views, per_draw", [(1, 1), (2, 1), (2, 3)])
def test_fsa_features_are_exact_means_of_specific_and_generic_vectors(views, per_draw, device):
    bank = identifiable_bank(views, device=device)
    cfg = AugmentConfig(batch_size=64, na=3, tau_s=TAU_S, tau_g=TAU_G)
    aug = make_augmenter("fsa", bank, cfg)
    nt, na, g = 8 * per_draw, 3, torch.Generator(device=device).manual_seed(0)
    seen_n_specific = set()
    for _ in range(12):
        d = aug.draw(g, batches=per_draw)
        feats, labels = d["features"], d["labels"]
        assert feats.shape == (64 * per_draw, bank.feature_dim) and labels.shape == (64 * per_draw,)
        d = {k: v.cpu() for k, v in d.items()}
        feats, labels = d["features"], d["labels"]
        tail_cls = labels[:nt]
        assert set(tail_cls.tolist()) <= set(TAIL)
        assert torch.equal(feats[:nt], bank.pooled.cpu()[d["tail"], d["tail_view"]])  # real tail rows
        assert set(labels[nt * (1 + na):].tolist()) <= set(HEAD)  # Nt(1+Na) head rows
        for j in range(nt * na):
            i, t, u = j // na, int(d["tail"][j // na]), int(d["confusing"][j])
            tv, uv = int(d["tail_view"][i]), int(d["confusing_view"][j])
            c = int(tail_cls[i])
            assert labels[nt + j] == c  # labelled with its tail class
            assert int(bank.labels[u]) == CONFUSING[TAIL.index(c)][j % na]  # one per confusing class
            assert int(d["confusing_class"][i, j % na]) == int(bank.labels[u])
            counts = decode(bank, feats[nt + j])
            assert counts.sum() == 4  # L vectors, none of them all-zero
            spec, gen = counts[t, tv], counts[u, uv]
            assert spec.sum() + gen.sum() == 4  # nothing from any other image or view
            n_spec = int(spec.sum())
            assert n_spec == round(float(d["gamma"][j]) * 4) == int(d["n_specific"][j])
            assert {l for l in range(4) if spec[l]} <= allowed(bank, t, tv, TAU_S, "specific")
            assert {l for l in range(4) if gen[l]} <= allowed(bank, u, uv, TAU_G, "generic")
            seen_n_specific.add(n_spec)
    assert seen_n_specific == {0, 1, 2, 3, 4}  # gamma spans the whole mixing range


def test_batches_drawn_together_are_the_draws_split_per_batch():
    bank = identifiable_bank(views=2)
    aug = make_augmenter("fsa", bank, AugmentConfig(batch_size=64, na=3, tau_s=TAU_S, tau_g=TAU_G))
    d = aug.draw(torch.Generator().manual_seed(3), batches=5)
    got = aug.batches(torch.Generator().manual_seed(3), 5)
    nt, a, h = 8, 24, 32
    assert len(got) == 5
    for i, (x, y) in enumerate(got):
        rows = torch.cat([torch.arange(i * nt, (i + 1) * nt), 5 * nt + torch.arange(i * a, (i + 1) * a),
                          5 * (nt + a) + torch.arange(i * h, (i + 1) * h)])
        assert torch.equal(x, d["features"][rows]) and torch.equal(y, d["labels"][rows])
        assert set(y[:nt + a].tolist()) <= set(TAIL) and set(y[nt + a:].tolist()) <= set(HEAD)
        assert torch.equal(y[nt:nt + a], y[:nt].repeat_interleave(3))  # each tail row's Na


def test_thresholds_are_strict_and_skip_zero_vectors():
    cams = torch.tensor([[0.5, 0.75, 0.25, 0.1], [1.0, 0.9, 0.3, 0.0]])  # (M, L)
    nonzero = torch.tensor([[True, True, True, True], [False, True, True, True]])
    spec, ok = location_mask(cams, nonzero, 0.5, "specific")
    assert spec.tolist() == [[0, 1, 0, 0], [0, 1, 0, 0]] and ok.all()  # 0.5 is not > 0.5
    gen, _ = location_mask(cams, nonzero, 0.25, "generic")
    assert gen.tolist() == [[0, 0, 0, 1], [0, 0, 0, 1]]  # 0.25 is not < 0.25


def test_empty_sets_fall_back_to_the_extreme_non_zero_location():
    cams = torch.tensor([[0.5, 0.4, 0.5, 0.3], [0.6, 0.7, 0.9, 0.9]])
    nonzero = torch.tensor([[True, True, True, True], [True, True, False, True]])
    spec, _ = location_mask(cams, nonzero, 0.5, "specific")
    assert spec.tolist()[0] == [1, 0, 0, 0]  # highest CAM, the first of a tie
    spec, _ = location_mask(cams, nonzero, 0.95, "specific")
    assert spec.tolist()[1] == [0, 0, 0, 1]  # location 2 ties at 0.9 but its vector is zero
    gen, _ = location_mask(cams, nonzero, 0.2, "generic")
    assert gen.tolist() == [[0, 0, 0, 1], [1, 0, 0, 0]]  # lowest CAM


def test_fallback_inside_a_batch():
    # every tail image has CAMs at most tau_s: each specific draw is its highest-CAM location
    rows = [[0.9, 0.1, 0.0, 0.3]] * 15 + [[0.2, 0.5, 0.4, 0.0]] * 7
    bank = identifiable_bank(cam_rows=rows)
    d = make_augmenter("fsa", bank, AugmentConfig(batch_size=64, tau_s=0.5, tau_g=0.25)).draw(
        torch.Generator().manual_seed(1))
    for j in range(24):
        t = int(d["tail"][j // 3])
        spec = decode(bank, d["features"][8 + j])[t, 0]
        assert spec.sum() == d["n_specific"][j] and spec[[0, 2, 3]].sum() == 0  # only location 1


def test_an_all_zero_tail_map_gives_purely_generic_features():
    bank = identifiable_bank()
    tail_images = bank.tail_pool
    bank.spatial.features[tail_images] = 0.0  # tail maps entirely zero
    bank.nonzero[tail_images] = False
    d = make_augmenter("fsa", bank, AugmentConfig(batch_size=64, tau_g=TAU_G)).draw(
        torch.Generator().manual_seed(2))
    assert torch.equal(d["n_specific"], torch.zeros(24, dtype=torch.long))
    head_conf = 0
    for j in range(24):
        u = int(d["confusing"][j])
        counts = decode(bank, d["features"][8 + j])
        if int(bank.labels[u]) in HEAD:  # all L vectors from the confusing image
            assert counts[u].sum() == 4 and counts.sum() == 4
            head_conf += 1
        else:  # both maps entirely zero: the one case that yields a zero feature
            assert counts.sum() == 0
    assert head_conf > 0


@pytest.mark.parametrize("name", AUGMENTERS.names())
def test_every_augmenter_is_seeded_and_shaped(name):
    bank = identifiable_bank(views=2)
    aug = make_augmenter(name, bank, AugmentConfig(batch_size=64))
    a = aug.batch(torch.Generator().manual_seed(5))
    b = aug.batch(torch.Generator().manual_seed(5))
    c = aug.batch(torch.Generator().manual_seed(6))
    assert a[0].shape == (64, bank.feature_dim) and a[0].dtype == torch.float32
    assert a[1].shape == (64,) and a[1].dtype == torch.long
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # same seed, same batch
    assert not torch.equal(a[0], c[0])
    assert int(a[1].min()) >= 0 and int(a[1].max()) < bank.num_classes


@pytest.mark.parametrize("name", ["fsa", "none", "cloud"])
def test_balanced_batches_are_half_tail_half_head(name):
    bank = identifiable_bank()
    _, labels = make_augmenter(name, bank, AugmentConfig(batch_size=48, na=2)).batch(
        torch.Generator().manual_seed(0))
    assert set(labels[:24].tolist()) <= set(TAIL) and set(labels[24:].tolist()) <= set(HEAD)


@pytest.mark.parametrize("size", [100, 4, 0])
def test_a_batch_size_that_does_not_fit_is_refused(size):
    with pytest.raises(ConfigError, match="batch-size"):
        make_augmenter("fsa", identifiable_bank(), AugmentConfig(batch_size=size))
    assert balanced_tail_count(128, 3) == 16


def test_tail_draws_instance_versus_class():
    bank = identifiable_bank(counts=[6, 5, 4, 12, 3, 1])
    g = torch.Generator().manual_seed(0)
    inst = torch.bincount(bank.labels[bank.draw_tail(8000, "instance", g)], minlength=6)[3:]
    cls = torch.bincount(bank.labels[bank.draw_tail(8000, "class", g)], minlength=6)[3:]
    assert torch.allclose(inst / 8000, torch.tensor([12, 3, 1]) / 16, atol=0.03)
    assert torch.allclose(cls / 8000, torch.full((3,), 1 / 3), atol=0.03)


def test_class_balanced_draws_every_class_equally():
    bank = identifiable_bank()
    _, labels = make_augmenter("class-balanced", bank, AugmentConfig(batch_size=6000)).batch(
        torch.Generator().manual_seed(0))
    assert torch.allclose(torch.bincount(labels, minlength=6) / 6000, torch.full((6,), 1 / 6),
                          atol=0.03)


def cloud_bank():
    g = torch.Generator().manual_seed(0)
    K, C, counts = 5, 32, [400, 300, 200, 30, 10]
    centres = F.normalize(torch.randn(K, C, generator=g), dim=1)
    labels = torch.repeat_interleave(torch.arange(K), torch.tensor(counts))
    spread = torch.tensor([0.35, 0.3, 0.4, 0.08, 0.05])[labels][:, None]  # head wide, tail narrow
    pooled = (centres[labels] + spread * torch.randn(len(labels), C, generator=g)) * 3.0
    return bank_from_tensors(labels=labels, pooled=pooled, head_classes=[0, 1, 2],
                             tail_classes=[3, 4], confusing=[[0, 1], [0, 3]], num_classes=K)


def test_cloud_matches_the_head_angular_variance():
    bank = cloud_bank()
    aug = make_augmenter("cloud", bank, AugmentConfig(batch_size=96, na=2))
    _, variance, _ = angular_statistics(bank.pooled[:, 0], bank.labels, 5)
    assert aug.target == pytest.approx(float(variance[:3].mean()))
    assert float(variance[3:].max()) < aug.target / 3  # the tail starts much narrower
    g, feats, labels = torch.Generator().manual_seed(0), [], []
    for _ in range(100):
        x, y = aug.batch(g)
        feats.append(x[16:48]), labels.append(y[16:48])  # the Nt * Na cloud rows (Nt = 16)
    x, y = torch.cat(feats), torch.cat(labels)
    cos = (F.normalize(x, dim=1) * aug.centres[y]).sum(1).clamp(-1, 1)
    for c in (3, 4):
        generated = float((torch.arccos(cos[y == c]) ** 2).mean())
        assert generated == pytest.approx(aug.target, rel=0.06)
    norms = x.norm(dim=1)
    assert float(norms.min()) > 0 and math.isfinite(float(norms.max()))


def test_gamma_min_narrows_the_mixing_ratio():
    bank = identifiable_bank()
    cfg = AugmentConfig(batch_size=64, na=3, tau_s=TAU_S, tau_g=TAU_G, gamma_min=0.75)
    d = make_augmenter("fsa", bank, cfg).draw(torch.Generator().manual_seed(0), batches=20)
    assert float(d["gamma"].min()) >= 0.75 and float(d["gamma"].max()) < 1.0
    assert int(d["n_specific"][d["n_specific"] > 0].min()) >= 3  # round(0.75 * 4) = 3
    with pytest.raises(ConfigError, match="gamma-min"):
        AugmentConfig(gamma_min=1.0).validate()


@pytest.mark.parametrize("name", sorted(AUGMENTERS.names()))
def test_iter_batches_prefetch_repeats_the_plain_draws_and_stops_its_thread(name):
    import contextlib
    import threading

    from ltkit.augment import iter_batches

    bank = identifiable_bank()
    cfg = AugmentConfig(batch_size=64)
    plain = make_augmenter(name, bank, cfg)
    g = torch.Generator().manual_seed(3)
    many = getattr(plain, "batches", None)  # iter_batches draws 64 at a time here (tiny C)
    expected = many(g, 64)[:5] if many else [plain.batch(g) for _ in range(5)]
    with contextlib.closing(iter_batches(make_augmenter(name, bank, cfg),
                                         torch.Generator().manual_seed(3), 200)) as it:
        got = [next(it) for _ in range(5)]  # the thread is drawing the next chunk meanwhile
    # closing early ends the drawing thread at once
    assert not [t for t in threading.enumerate() if t.name.startswith("ltkit-draw")]
    for (x, y), (ex, ey) in zip(got, expected):
        assert torch.equal(x, ex) and torch.equal(y, ey)


def test_fewer_augmented_samples_than_confusing_classes_draw_distinct_classes_uniformly():
    """Na = 2 of Nf = 3: "we sample Na images from its Nf confusing classes" — for each tail
    image two distinct confusing classes, every one of the three equally often."""
    bank = identifiable_bank()
    d = make_augmenter("fsa", bank, AugmentConfig(batch_size=48, na=2, tau_s=TAU_S, tau_g=TAU_G)).draw(
        torch.Generator().manual_seed(0), batches=400)
    conf, tails = d["confusing_class"], bank.labels[d["tail"]]  # (Nt, 2), (Nt,)
    assert bool((conf[:, 0] != conf[:, 1]).all())
    for c in TAIL:
        rows = conf[tails == c]
        assert set(rows.flatten().tolist()) == set(CONFUSING[TAIL.index(c)])  # all three used
        share = torch.bincount(rows.flatten(), minlength=10)[CONFUSING[TAIL.index(c)]].double() / len(rows)
        assert torch.allclose(share, torch.full((3,), 2 / 3, dtype=torch.float64), atol=0.08), share
    labels = bank.labels[d["confusing"]].view(-1, 2)  # each augmented row's image is of its class
    assert torch.equal(labels, conf)
