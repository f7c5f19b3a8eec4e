"""Samplers: class frequencies match their targets, orders repeat by (seed, epoch), shards split."""

from __future__ import annotations

import numpy as np
import pytest

from ltkit.errors import ConfigError, DataError
from ltkit.samplers import SAMPLERS, make_sampler

COUNTS = np.array([400, 100, 25, 4])  # a small long tail
LABELS = np.repeat(np.arange(4), COUNTS)  # (529,) sorted by class
N, DRAWS = len(LABELS), 20_000


def _frequencies(name: str, epoch: int = 0, epochs: int = 10) -> np.ndarray:
    sampler = make_sampler(name, LABELS, seed=1, epochs=epochs, num_samples=DRAWS)
    sampler.set_epoch(epoch)
    indices = np.fromiter(iter(sampler), dtype=np.int64)
    assert len(indices) == DRAWS and indices.min() >= 0 and indices.max() < N
    return np.bincount(LABELS[indices], minlength=4) / DRAWS


INSTANCE = COUNTS / COUNTS.sum()
BALANCED = np.full(4, 0.25)
SQRT = np.sqrt(COUNTS) / np.sqrt(COUNTS).sum()  # 20, 10, 5, 2 over 37


@pytest.mark.parametrize("name,target", [("instance", INSTANCE), ("class-balanced", BALANCED),
                                         ("sqrt", SQRT), ("progressive", INSTANCE)])
def test_class_frequencies_match_the_target(name, target):
    # 20k draws: the standard error of a frequency is at most 0.0036; allow 4 of them
    np.testing.assert_allclose(_frequencies(name), target, atol=0.015)


@pytest.mark.parametrize("epoch", [5, 9, 10, 15])
def test_progressive_interpolates_over_the_epochs(epoch):
    t = min(epoch, 10) / 10  # T = 10 epochs; from T on it stays class-balanced
    np.testing.assert_allclose(_frequencies("progressive", epoch),
                               (1 - t) * INSTANCE + t * BALANCED, atol=0.015)


def test_progressive_ends_near_class_balanced():
    sampler = make_sampler("progressive", LABELS, seed=0, epochs=10)
    np.testing.assert_allclose(sampler.class_probabilities(0).numpy(), INSTANCE)
    np.testing.assert_allclose(sampler.class_probabilities(9).numpy(),  # the last epoch
                               0.1 * INSTANCE + 0.9 * BALANCED)


def test_instance_draws_every_sample_once_per_epoch():
    sampler = make_sampler("instance", LABELS, seed=3, epochs=2)
    assert len(sampler) == N and sorted(sampler) == list(range(N))
    assert list(sampler) != list(range(N))  # shuffled
    longer = make_sampler("instance", LABELS, seed=3, epochs=2, num_samples=2 * N + 7)
    assert np.bincount(list(longer), minlength=N).min() == 2  # every sample at least twice


def test_class_balanced_draws_within_a_class_uniformly():
    sampler = make_sampler("class-balanced", LABELS, seed=0, epochs=1, num_samples=DRAWS)
    indices = np.array(list(sampler))
    tail = indices[LABELS[indices] == 3] - (N - 4)  # positions inside the 4-sample class
    np.testing.assert_allclose(np.bincount(tail, minlength=4) / len(tail), 0.25, atol=0.05)


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_order_depends_only_on_seed_and_epoch(name):
    def order(seed: int, epoch: int) -> list[int]:
        sampler = make_sampler(name, LABELS, seed=seed, epochs=10)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(0, 3) == order(0, 3)
    assert order(0, 3) != order(0, 4) and order(0, 3) != order(1, 3)


@pytest.mark.parametrize("name", SAMPLERS.names())
@pytest.mark.parametrize("num_samples", [N - 1, N])  # N is odd: one padded index
def test_two_rank_shards_rebuild_the_one_rank_list(name, num_samples):
    def shard(rank: int, world_size: int) -> list[int]:
        sampler = make_sampler(name, LABELS, seed=7, epochs=10, num_samples=num_samples,
                               rank=rank, world_size=world_size)
        sampler.set_epoch(2)
        assert len(list(sampler)) == len(sampler)
        return list(sampler)

    whole, first, second = shard(0, 1), shard(0, 2), shard(1, 2)
    assert len(first) == len(second) == (num_samples + 1) // 2
    interleaved = [i for pair in zip(first, second) for i in pair]
    padding = whole[: len(interleaved) - num_samples]  # the start, repeated
    assert interleaved == whole + padding
    if name == "instance":
        assert set(first) | set(second) == set(whole)
        if num_samples % 2 == 0:
            assert not set(first) & set(second)  # no padding: each sample on exactly one rank


def test_more_ranks_than_samples_still_gives_every_rank_a_sample():
    shards = [list(make_sampler("instance", [0, 1], seed=0, epochs=1, rank=r, world_size=3))
              for r in range(3)]
    assert all(len(s) == 1 for s in shards)


def test_label_gaps_are_not_drawn():
    labels = np.array([0, 0, 0, 2, 2])  # class 1 has no samples
    sampler = make_sampler("class-balanced", labels, seed=0, epochs=1, num_samples=2000)
    drawn = np.bincount(labels[list(sampler)], minlength=3) / 2000
    assert drawn[1] == 0 and abs(drawn[0] - 0.5) < 0.05


def test_bad_arguments():
    with pytest.raises(ConfigError, match="class-balanced, instance, progressive, sqrt"):
        make_sampler("oversample", LABELS, seed=0, epochs=1)
    with pytest.raises(ConfigError, match="rank"):
        make_sampler("instance", LABELS, seed=0, epochs=1, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="epochs"):
        make_sampler("progressive", LABELS, seed=0, epochs=0)
    with pytest.raises(ConfigError, match="num_samples"):
        make_sampler("sqrt", LABELS, seed=0, epochs=1, num_samples=0)
    with pytest.raises(DataError):
        make_sampler("instance", [], seed=0, epochs=1)
    with pytest.raises(DataError):
        make_sampler("instance", [0, -1], seed=0, epochs=1)
