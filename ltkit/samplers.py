"""Kang et al.'s training samplers, by name:
`make_sampler("class-balanced", labels, seed=0, epochs=30)`.

Each epoch draws `num_samples` indices (default: the data set's size):
- `instance`: every sample once per epoch, shuffled (reshuffled again for the surplus when
  num_samples > N);
- `class-balanced`, `sqrt`, `progressive`: draw a class c with probability p_c, then one of
  its samples uniformly (with replacement). p_c is 1/K (over the classes that have samples),
  proportional to n_c^0.5, or p(t) = (1 - t/T) n_c/N + (t/T) 1/K with t the epoch (0-based,
  beyond T it stays class-balanced) and T = `epochs`, as in Kang et al.
The order depends only on (seed, epoch): a private torch.Generator, never the global RNG, so
a resumed run repeats it. Distributed: every rank builds the same global list, pads it to a
multiple of `world_size` by repeating its start, and takes the strided shard `rank::world_size`;
`len()` is the per-rank length. Call `set_epoch(epoch)` before each epoch, like
DistributedSampler.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from ltkit import choices
from ltkit.errors import ConfigError, DataError
from ltkit.registry import Registry

SAMPLERS: Registry[type[LongTailSampler]] = Registry("sampler", declared=choices.SAMPLERS)


def _generator(seed: int, epoch: int) -> torch.Generator:
    """A generator whose state depends only on (seed, epoch), well mixed for nearby values."""
    words = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    g = torch.Generator()
    g.manual_seed((int(words[0]) << 31) ^ int(words[1]))  # < 2^63
    return g


class LongTailSampler(Sampler[int], abc.ABC):
    """Base: class-probability sampling; subclasses give `class_probabilities(epoch)`."""

    def __init__(self, labels: Sequence[int] | np.ndarray | torch.Tensor, *, seed: int,
                 epochs: int, num_samples: int | None = None, rank: int = 0,
                 world_size: int = 1):
        labels = torch.as_tensor(np.asarray(labels)).long()  # (N,)
        if labels.dim() != 1 or labels.numel() == 0 or int(labels.min()) < 0:
            raise DataError("a sampler needs a non-empty 1-D array of class labels >= 0")
        self.num_samples = labels.numel() if num_samples is None else num_samples
        if self.num_samples < 1 or epochs < 1 or seed < 0:
            raise ConfigError(f"a sampler needs num_samples >= 1, epochs >= 1 and seed >= 0, "
                              f"got {self.num_samples}, {epochs} and {seed}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not in [0, world_size={world_size})")
        self.labels, self.seed, self.epochs = labels, seed, epochs
        self.rank, self.world_size, self.epoch = rank, world_size, 0
        self.counts = torch.bincount(labels)  # (K,) samples per class
        self._order = torch.argsort(labels, stable=True)  # (N,) sample ids grouped by class
        self._starts = torch.cumsum(self.counts, 0) - self.counts  # (K,) first slot of each class

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @abc.abstractmethod
    def class_probabilities(self, epoch: int) -> torch.Tensor:
        """(K,) float64 probability of drawing each class in `epoch`."""

    def epoch_indices(self) -> torch.Tensor:
        """(num_samples,) the global index list of this epoch, the same on every rank."""
        g = _generator(self.seed, self.epoch)
        p = self.class_probabilities(self.epoch)  # (K,)
        classes = torch.multinomial(p, self.num_samples, replacement=True, generator=g)  # (S,)
        n = self.counts[classes]  # (S,) size of each drawn class
        offset = (torch.rand(self.num_samples, generator=g, dtype=torch.float64) * n).long()
        return self._order[self._starts[classes] + torch.minimum(offset, n - 1)]  # (S,)

    def __iter__(self) -> Iterator[int]:
        indices = self.epoch_indices()  # (S,)
        total = len(self) * self.world_size
        if total > len(indices):  # pad by repeating the start so every rank gets len(self)
            indices = indices.repeat(math.ceil(total / len(indices)))[:total]
        return iter(indices[self.rank:total:self.world_size].tolist())

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.world_size)


@SAMPLERS.register("instance")
class InstanceSampler(LongTailSampler):
    def class_probabilities(self, epoch: int) -> torch.Tensor:
        return self.counts.double() / self.counts.sum()

    def epoch_indices(self) -> torch.Tensor:
        g = _generator(self.seed, self.epoch)
        n = len(self.labels)
        perms = [torch.randperm(n, generator=g) for _ in range(math.ceil(self.num_samples / n))]
        return torch.cat(perms)[: self.num_samples]  # (S,)


@SAMPLERS.register("class-balanced")
class ClassBalancedSampler(LongTailSampler):
    def class_probabilities(self, epoch: int) -> torch.Tensor:
        present = (self.counts > 0).double()  # (K,) a label gap is not a class to draw
        return present / present.sum()


@SAMPLERS.register("sqrt")
class SquareRootSampler(LongTailSampler):
    def class_probabilities(self, epoch: int) -> torch.Tensor:
        root = self.counts.double().sqrt()  # (K,)
        return root / root.sum()


@SAMPLERS.register("progressive")
class ProgressiveSampler(LongTailSampler):
    def class_probabilities(self, epoch: int) -> torch.Tensor:
        t = min(max(epoch, 0), self.epochs) / self.epochs  # t / T in [0, 1]
        instance = self.counts.double() / self.counts.sum()
        present = (self.counts > 0).double()
        return (1.0 - t) * instance + t * present / present.sum()


def make_sampler(name: str, labels: Sequence[int] | np.ndarray | torch.Tensor, *, seed: int,
                 epochs: int, num_samples: int | None = None, rank: int = 0,
                 world_size: int = 1) -> LongTailSampler:
    """Sampler `name` over `labels` (N,); unknown names raise ConfigError listing the valid ones."""
    return SAMPLERS.get(name)(labels, seed=seed, epochs=epochs, num_samples=num_samples,
                              rank=rank, world_size=world_size)
