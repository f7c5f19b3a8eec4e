"""SCL: SupCon values on hand-made inputs, the projection head, two views, the gathered loss."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from ltkit.errors import ConfigError
from ltkit.scl import ProjectionHead, SupConLoss, TwoViewDataset, stack_views, supcon_loss


def _naive_supcon(z: torch.Tensor, labels: list[int], t: float) -> float:
    """Khosla et al.'s eq. 2 written out: mean over anchors with a positive."""
    losses = []
    for i in range(len(z)):
        positives = [p for p in range(len(z)) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        denominator = sum(math.exp(float(z[i] @ z[a]) / t) for a in range(len(z)) if a != i)
        losses.append(-sum(math.log(math.exp(float(z[i] @ z[p]) / t) / denominator)
                           for p in positives) / len(positives))
    return sum(losses) / len(losses)


def test_supcon_on_two_orthogonal_pairs():
    e1, e2 = torch.eye(2)
    z = torch.stack([e1, e1, e2, e2])  # (4, 2): each anchor has one positive, two negatives
    labels = torch.tensor([0, 0, 1, 1])
    # anchor 0: log p = 1/T - log(exp(1/T) + 2)
    assert supcon_loss(z, labels, temperature=1.0).item() == pytest.approx(math.log(math.e + 2) - 1)
    assert supcon_loss(z, labels, temperature=0.5).item() == pytest.approx(math.log(math.e**2 + 2) - 2)
    # the authors' code scales by T / base_temperature
    scaled = supcon_loss(z, labels, temperature=0.5, base_temperature=0.07).item()
    assert scaled == pytest.approx((0.5 / 0.07) * (math.log(math.e**2 + 2) - 2))


def test_supcon_matches_the_formula_on_random_inputs():
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(9, 5, generator=g), dim=1)
    labels = [0, 1, 2, 0, 1, 0, 2, 1, 3]  # class 3 has a single sample: no positive, left out
    got = supcon_loss(z, torch.tensor(labels), temperature=0.07).item()
    assert got == pytest.approx(_naive_supcon(z, labels, 0.07), rel=1e-5)


def test_supcon_is_lower_for_clustered_classes_and_zero_without_positives():
    labels = torch.tensor([0, 0, 1, 1])
    clustered = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    mixed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert supcon_loss(clustered, labels).item() < supcon_loss(mixed, labels).item()
    z = torch.randn(3, 4, requires_grad=True)
    loss = supcon_loss(F.normalize(z, dim=1), torch.tensor([0, 1, 2]))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(z.grad).all()
    with pytest.raises(ConfigError, match="temperature"):
        SupConLoss(temperature=0.0)


def test_projection_head_gives_unit_vectors_of_the_chosen_size():
    head = ProjectionHead(64, 128)
    out = head(torch.randn(5, 64))
    assert out.shape == (5, 128)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(5))


class _Noisy(torch.utils.data.Dataset):
    """Items whose transform draws from torch's global RNG, like ltkit's data sets."""

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i):
        return torch.full((1, 2, 2), float(i)) + torch.rand(1, 2, 2), i


def test_two_views_are_two_draws_and_stack_into_view_blocks():
    torch.manual_seed(0)
    pair, label = TwoViewDataset(_Noisy())[2]
    assert pair.shape == (2, 1, 2, 2) and label == 2
    assert not torch.equal(pair[0], pair[1])  # two augmentations, not one copied
    torch.manual_seed(0)
    again, _ = TwoViewDataset(_Noisy())[2]
    assert torch.equal(pair, again)  # a seed repeats the views
    images = torch.stack([TwoViewDataset(_Noisy())[i][0] for i in range(3)])  # (3, 2, 1, 2, 2)
    flat, targets = stack_views(images, torch.tensor([0, 1, 2]))
    assert flat.shape == (6, 1, 2, 2) and targets.tolist() == [0, 1, 2, 0, 1, 2]
    assert torch.equal(flat[1], images[1, 0]) and torch.equal(flat[4], images[1, 1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gathered_worker(rank: int, world: int, port: int, z_all: torch.Tensor, labels: torch.Tensor,
                     cases: list[list[int]], out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results = []
        for sizes in cases:
            start = sum(sizes[:rank])
            z = z_all[start:start + sizes[rank]].clone().requires_grad_(True)
            loss = SupConLoss(temperature=0.1)(z, labels[start:start + sizes[rank]])
            loss.backward()
            results.append((loss.detach(), z.grad.clone()))
        torch.save(results, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.e2e  # two spawned gloo processes
def test_two_processes_contrast_with_the_global_batch(tmp_path):
    """Each process's anchors see every process's rows; gradients come back across processes."""
    g = torch.Generator().manual_seed(1)
    z_all = F.normalize(torch.randn(8, 6, generator=g), dim=1)
    labels = torch.tensor([0, 1, 0, 2, 1, 2, 0, 1])
    single = z_all.clone().requires_grad_(True)
    reference = supcon_loss(single, labels, temperature=0.1)
    reference.backward()
    cases = [[4, 4], [3, 5]]  # equal shares (as the samplers give), and unequal ones
    mp.spawn(_gathered_worker, args=(2, _free_port(), z_all, labels, cases, str(tmp_path)), nprocs=2)
    per_rank = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(2)]
    for i, sizes in enumerate(cases):
        losses = [per_rank[r][i][0] for r in range(2)]
        # the mean over every anchor, as one process computes it
        mean = sum(n * l for n, l in zip(sizes, losses)) / 8
        assert mean.item() == pytest.approx(reference.item(), rel=1e-5)
    # DDP averages gradients: with equal shares each process's is world_size x its part
    grads = torch.cat([per_rank[r][0][1] for r in range(2)])
    torch.testing.assert_close(grads / 2, single.grad, rtol=1e-4, atol=1e-6)
