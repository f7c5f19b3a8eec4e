"""The demo pipeline through ltkit's library API instead of its commands.

Every stage is a typed function with one config dataclass, exactly what the commands call:
train a backbone on Fashion-MNIST-LT (IF 100), extract the feature store, build the
confusing-class table, fine-tune with FSA and with balanced batches without augmentation,
and measure all three on the balanced test split.

    python examples/library_api.py                       # real Fashion-MNIST-LT, 10 epochs
    python examples/library_api.py --data synthetic --epochs 1 --out runs/api   # offline, seconds

Artifacts go under --out; a rerun reuses each one that exists with the same options.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ltkit import console
from ltkit.confusing import ConfusingConfig, build_table
from ltkit.data import DatasetSpec
from ltkit.evaluate import EvalConfig, evaluate
from ltkit.extract import ExtractConfig, extract
from ltkit.finetune import FinetuneConfig, augment_finetune
from ltkit.runoptions import RunOptions
from ltkit.train import TrainConfig, train_backbone


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion-mnist-lt", help="data set registry name")
    parser.add_argument("--root", default=None, help="data folder (default: the data set's own)")
    parser.add_argument("--imbalance", type=float, default=100.0, help="imbalance factor n_max / n_min")
    parser.add_argument("--epochs", type=int, default=10, help="Phase-I training epochs")
    parser.add_argument("--lr", type=float, default=0.1, help="Phase-I peak learning rate")
    parser.add_argument("--iterations", type=int, default=None, help="Phase-II iterations (default: the paper's 6400)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--out", default="runs/api", help="folder of the artifacts")
    args = parser.parse_args(argv)
    console.configure(quiet=False)
    out = Path(args.out)

    # 1. Phase I: backbone + linear classifier (resumes after a crash, reuses a finished run)
    spec = DatasetSpec(name=args.data, root=args.root, imbalance=args.imbalance)
    backbone = train_backbone(TrainConfig(data=spec, arch="resnet32", epochs=args.epochs, lr=args.lr,
                                          run=RunOptions(device=args.device)), out=out / "backbone.pt")
    # 2. the feature store: maps before pooling, CAMs, pooled features, logits
    store = extract(backbone, ExtractConfig(device=args.device), out=out / "features.h5")
    # 3. head / tail split and the top-3 confusing classes of every tail class
    table = build_table(store, ConfusingConfig(head_ratio=0.9, top=3), out=out / "table.pt")
    # 4. Phase II from the cache: FSA (Algorithm 1) and its "no augmentation" baseline
    runs: dict[str, Path] = {"phase1": store}
    for method in ("fsa", "none"):
        cfg = FinetuneConfig(augment=method, iterations=args.iterations, run=RunOptions(device=args.device))
        runs[method] = augment_finetune(table, cfg, out=out / f"{method}.pt")
    # 5. measure on the balanced test split
    results = {name: evaluate(path, EvalConfig(on="test", device=args.device)).result
               for name, path in runs.items()}
    for name, r in results.items():
        splits = {g: r["splits"][g]["accuracy"] for g in ("many", "medium", "few")}
        shown = "  ".join(f"{g} {'-' if v is None else f'{100 * v:.2f}'}" for g, v in splits.items())
        console.log(f"{name:>7}: balanced {100 * r['balanced_accuracy']:.2f}  {shown}")
    return results


if __name__ == "__main__":
    main()
