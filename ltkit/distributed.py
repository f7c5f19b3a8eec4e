"""Several processes (torchrun): process group set-up, rank-0-only output, global BatchNorm.

ltkit scales on PyTorch's own engine: ``torchrun --nproc-per-node N -m ltkit train-backbone``
starts N processes; each reads RANK / WORLD_SIZE / LOCAL_RANK from its environment, joins
one process group (NCCL on GPUs, gloo on CPUs) and trains one DistributedDataParallel
replica on a disjoint shard of the sampler's order. torchrun's agent watches the workers:
when one dies, it stops the others and exits non-zero, so a failure never hangs.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ltkit.device import resolve_device
from ltkit.errors import ConfigError


@dataclass
class DistContext:
    rank: int = 0          # this process's index among all processes
    world_size: int = 1    # number of processes
    local_rank: int = 0    # index on this machine (picks the GPU)
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def setup(device: str = "auto", timeout_minutes: float = 30.0) -> DistContext:
    """Join the torchrun process group when there is one; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=resolve_device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} "
                              "visible); start at most one process per GPU")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def teardown(ctx: DistContext) -> None:
    if ctx.active and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def session(device: str = "auto"):
    ctx = setup(device)
    try:
        yield ctx
    finally:
        teardown(ctx)


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(tensor)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics are those of the global batch across processes.

    ``torch.nn.SyncBatchNorm`` does this on GPUs only; this one works on any device (gloo on
    CPUs) through the differentiable ``all_reduce``, so a run on N processes computes what one
    process would on the same global batch.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        count = torch.full((1,), x.numel() / c, dtype=x.dtype, device=x.device)
        stats = torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count])  # (2C + 1,)
        stats = _all_reduce_sum(stats)  # summed over processes; gradients flow back
        n = stats[-1]
        mean = stats[:c] / n  # (C,)
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)  # (C,) biased, as BN normalises
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - m).add_(m * mean)
            self.running_var.mul_(1 - m).add_(m * var * n / (n - 1).clamp_min(1))
        y = (x - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def convert_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm layers -> global-batch BatchNorm: torch's SyncBatchNorm on CUDA, ours elsewhere."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, GlobalBatchNorm2d):
            new = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats).to(child.weight.device)
            new.load_state_dict(child.state_dict())
            setattr(model, name, new)
        else:
            convert_batchnorm(child, device)
    return model


def replicate(net: nn.Module, ctx: DistContext, *, find_unused: bool = False) -> nn.Module:
    """`net` itself, or under torchrun one DDP replica per process (`find_unused` for modules
    whose parts sit out some steps)."""
    if not ctx.active:
        return net
    device = ctx.device
    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=find_unused)
