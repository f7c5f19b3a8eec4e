"""FSA batch generation: the vectorised augmenter against a literal per-sample Algorithm 1.

    python benchmarks/bench_fsa.py [--images 12000] [--batches 50] [--device cpu] [--threads 1]

Both build FSA batches (Nt tail, Nt*Na augmented, Nt(1+Na) head; batch 128, Na = 3) from the
same bank: feature maps shaped like ResNet-32's on Fashion-MNIST-LT (64 channels, 7 x 7),
random but non-negative with some all-zero location vectors, and min-max normalised CAMs.
The literal version follows Algorithm 1 line by line, one tail sample, one confusing sample
and one head sample at a time (torch ops inside, Python loops around them), as a careful
first implementation would. Also measured: fine-tuning iterations per second (FSA and
no-augmentation batches, the linear FC). `run(...)` returns the figures; the script prints
them as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from ltkit import console
from ltkit.augment import AUTO_FIXED, AugmentConfig, bank_from_tensors, make_augmenter
from ltkit.classifiers import Classifier
from ltkit.finetune import FinetuneConfig, finetune_classifier

COUNTS_IF100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]  # FM-LT, imbalance 100


def make_bank(images: int, channels: int, side: int, device: str, seed: int = 0):
    """A bank with FM-LT's class profile scaled to ``images`` training images."""
    g = torch.Generator().manual_seed(seed)
    scale = images / sum(COUNTS_IF100)
    counts = torch.tensor([max(2, round(c * scale)) for c in COUNTS_IF100])
    labels = torch.repeat_interleave(torch.arange(10), counts)  # (N,)
    n = labels.numel()
    maps = torch.relu(torch.randn(n, channels, side, side, generator=g) - 0.3)  # (N, C, H, W)
    dead = torch.rand(n, 1, side, side, generator=g) < 0.05  # some all-zero location vectors
    maps = maps.masked_fill(dead, 0.0).half()
    raw = torch.randn(n, side * side, generator=g)  # (N, L)
    low, high = raw.min(1, keepdim=True).values, raw.max(1, keepdim=True).values
    cams = ((raw - low) / (high - low)).reshape(n, side, side)  # (N, H, W) in [0, 1]
    confusing = [[0, 1, 2], [0, 2, 3], [1, 3, 4], [0, 4, 5], [2, 5, 6]]
    return bank_from_tensors(labels=labels, pooled=maps.float().mean((2, 3)),
                             head_classes=[0, 1, 2, 3, 4], tail_classes=[5, 6, 7, 8, 9],
                             confusing=confusing, num_classes=10, features=maps, cams=cams,
                             device=device)


def literal_batch(bank, cfg: AugmentConfig, generator: torch.Generator):
    """Algorithm 1, one sample at a time."""
    nt, na, dev = cfg.batch_size // (2 * (1 + cfg.na)), cfg.na, bank.device
    L = bank.spatial.num_locations
    feats, labels = [], []

    def fmap(n):  # (L, C) location vectors of image n (view 0)
        zero = torch.zeros(L, dtype=torch.long, device=dev)
        return bank.spatial.vectors(zero + n, zero, torch.arange(L, device=dev))

    def one_of(pool):
        return int(pool[torch.randint(len(pool), (1,), generator=generator, device=dev)])

    def draw_vectors(fmap, cam, nonzero, count, side):
        keep = (cam > cfg.tau_s if side == "s" else cam < cfg.tau_g) & nonzero
        where = torch.nonzero(keep).flatten()
        if where.numel() == 0:  # the documented fallback: the extreme non-zero location
            masked = cam.masked_fill(~nonzero, float("-inf") if side == "s" else float("inf"))
            where = (masked.argmax() if side == "s" else masked.argmin()).reshape(1)
        pick = where[torch.randint(len(where), (count,), generator=generator, device=dev)]
        return fmap[pick]

    for _ in range(nt):
        t = one_of(bank.tail_pool)  # line 5: draw one sample from the tail classes
        c = int(bank.labels[t])
        feats.append(bank.pooled[t, 0])  # line 6
        labels.append(c)
        fmap_t = fmap(t)
        for u_cls in bank.confusing[bank.tail_row[c]].tolist()[:na]:  # lines 9-10
            members = torch.nonzero(bank.labels == u_cls).flatten()
            u = one_of(members)  # line 11
            fmap_u = fmap(u)
            gamma = float(torch.rand(1, generator=generator, device=dev))  # line 14
            n_s = round(gamma * L)
            spec = draw_vectors(fmap_t, bank.cams[t, 0], bank.nonzero[t, 0], n_s, "s")  # line 15
            gen = draw_vectors(fmap_u, bank.cams[u, 0], bank.nonzero[u, 0], L - n_s, "g")  # line 16
            feats.append(torch.cat([spec, gen]).mean(0))  # lines 17-18
            labels.append(c)
    for _ in range(nt * (1 + na)):  # line 20: head samples
        h = one_of(bank.head_pool)
        feats.append(bank.pooled[h, 0])
        labels.append(int(bank.labels[h]))
    return torch.stack(feats), torch.tensor(labels, device=dev)


def _time(fn, repeats: int, device: torch.device, rounds: int = 5) -> float:
    """Seconds per call: the best of ``rounds`` rounds of ``repeats`` calls (robust to a busy machine)."""
    fn()  # warm-up
    best = float("inf")
    for _ in range(rounds):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def run(*, images: int = 12000, channels: int = 64, side: int = 7, batch_sizes=(128, 512),
        batches: int = 20, literal_batches: int = 2, iterations: int = 300, device: str = "cpu",
        threads: int | None = 1) -> dict:
    """The figures: ms per FSA batch both ways and the speed-up per batch size (Na = 3), and
    fine-tuning iterations/s at batch 128 (FSA and no-augmentation batches)."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    bank = make_bank(images, channels, side, device)
    g = torch.Generator(device=dev).manual_seed(0)
    out = {"device": str(dev), "threads": torch.get_num_threads(), "images": bank.labels.numel(),
           "feature_map": [channels, side, side], "batches": {}}
    for size in batch_sizes:
        cfg = AugmentConfig(batch_size=size, na=3, tau_s=0.5, tau_g=0.5)
        aug = make_augmenter("fsa", bank, cfg)
        single = _time(lambda: aug.batch(g), batches, dev)  # one batch per call
        drawn = _time(lambda: aug.batches(g, 64), 1, dev) / 64  # as fine-tuning draws them
        literal = _time(lambda: literal_batch(bank, cfg, g), literal_batches, dev)
        out["batches"][size] = {"ms_vectorised": drawn * 1e3, "ms_one_per_call": single * 1e3,
                                "ms_literal": literal * 1e3, "speedup": literal / drawn,
                                "speedup_one_per_call": literal / single}
    phase1 = Classifier("linear", torch.randn(10, channels) * 0.1, torch.zeros(10))
    console.configure(quiet=True)
    for name in ("fsa", "none"):
        ft = FinetuneConfig.from_options(dict(AUTO_FIXED, augment=name, iterations=iterations, device=device)).resolved(
            bank.labels.numel(), 3)
        finetune_classifier(bank, phase1, dataclasses.replace(ft, iterations=2))  # warm-up (lazy imports)
        start = time.perf_counter()
        finetune_classifier(bank, phase1, ft)
        out[f"finetune_it_per_s_{name}"] = iterations / (time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-sizes", default="128,512", help="comma-separated, multiples of 8")
    parser.add_argument("--literal-batches", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (0: torch's default)")
    args = parser.parse_args()
    sizes = tuple(int(v) for v in args.batch_sizes.split(","))
    print(json.dumps(run(images=args.images, batches=args.batches, batch_sizes=sizes,
                         literal_batches=args.literal_batches, iterations=args.iterations,
                         device=args.device, threads=args.threads), indent=2))


if __name__ == "__main__":
    main()
