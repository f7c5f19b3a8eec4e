"""A spatial head fine-tuned from the cache vs one Phase-I epoch, side by side on this machine.

The claim (issue 15): a spatial head fine-tunes from the cache in at most a tenth of the time
one Phase-I epoch takes. Both are measured here, in one process, with the same threads:
- Phase I: ResNet-32 (ltkit's registered backbone) forward + backward + SGD step on batches of
  ``phase1_batch`` in-memory images of ``image_side``^2 (no data loading or augmentation,
  so the epoch is a lower bound and the ratio conservative); ``phase1_batches`` batches are
  timed after one warm-up batch and scaled to an epoch of ``images``;
- the spatial head: the whole default fine-tune (`ltkit.heads.SPATIAL_SCHEDULE`: 10 epochs of
  class-balanced batches, crt) on maps of the shape ResNet-32 stores for 28x28 images
  ((64, 7, 7), float16, resident), as `augment-finetune --head spatial` runs it;
- beside it, in the same run, the cheaper head ltkit offers (``SEPARABLE``: one
  depthwise-separable block of 128, `--head-block separable --head-depth 1`), informational:
  a sixth of the default's time, not its accuracy on every store (docs/phase2.md).
Defaults are Fashion-MNIST-LT IF 100's training split (14,366 images). Threads: torch's
(``OMP_NUM_THREADS``), reported.
"""

from __future__ import annotations

import math
import time

import torch

from ltkit import console
from ltkit.augment.bank import bank_from_tensors
from ltkit.classifiers import Classifier
from ltkit.finetune import FinetuneConfig, finetune_classifier
from ltkit.heads import map_bank
from ltkit.models import create_model

SEPARABLE = {"head_block": "separable", "head_depth": 1}  # the cheaper head, beside the default


def phase1_epoch_seconds(images: int, image_side: int, num_classes: int, batch: int, batches: int,
                         device: str) -> float:
    model = create_model("resnet32", num_classes=num_classes, in_channels=1).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 1, image_side, image_side, device=device)  # (B, 1, S, S)
    y = torch.randint(num_classes, (batch,), device=device)

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(batches):
        step()
    if device != "cpu":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / batches * math.ceil(images / batch)


def spatial_finetune_seconds(images: int, channels: int, side: int, num_classes: int, device: str,
                             **head) -> tuple[float, int]:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(images) % num_classes
    maps = torch.rand(images, channels, side, side, generator=g).half()  # (N, C, H, W) as stored
    cams = torch.rand(images, side, side, generator=g)
    half = num_classes // 2
    bank = bank_from_tensors(labels=labels, pooled=maps.float().mean((2, 3)), features=maps, cams=cams,
                             head_classes=list(range(half)), tail_classes=list(range(half, num_classes)),
                             confusing=[[0]] * (num_classes - half), num_classes=num_classes, device=device)
    bank = map_bank(bank, (side, side))
    phase1 = Classifier("linear", torch.randn(num_classes, channels), torch.zeros(num_classes))
    cfg = FinetuneConfig.from_options({"head": "spatial", "classifier": "crt", "augment": "class-balanced",
                                       "device": device, "threads": 0, **head}).resolved(images, 1)
    start = time.perf_counter()
    finetune_classifier(bank, phase1, cfg)
    return time.perf_counter() - start, cfg.iterations


def run(*, device: str = "cpu", images: int = 14366, image_side: int = 28, channels: int = 64, side: int = 7,
        num_classes: int = 10, phase1_batch: int = 128, phase1_batches: int = 10, iterations: int | None = None,
        separable: bool = True, **head) -> dict:
    console.configure(quiet=True)
    epoch = phase1_epoch_seconds(images, image_side, num_classes, phase1_batch, phase1_batches, device)
    if iterations:
        head["iterations"] = iterations
    finetune, steps = spatial_finetune_seconds(images, channels, side, num_classes, device, **head)
    result = {"phase1_epoch_seconds": epoch, "spatial_finetune_seconds": finetune, "iterations": steps,
              "threads": torch.get_num_threads(), "finetune_vs_epoch": finetune / epoch}
    if separable:
        seconds, _ = spatial_finetune_seconds(images, channels, side, num_classes, device,
                                              **head | SEPARABLE)
        result |= {"separable_finetune_seconds": seconds, "separable_vs_epoch": seconds / epoch}
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
