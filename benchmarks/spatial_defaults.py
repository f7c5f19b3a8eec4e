"""Choose the spatial head's defaults (depth, width, lr, epochs) on the validation split.

One bank per store (maps resident), one `finetune_classifier` per grid point (crt,
class-balanced, the stage's schedule otherwise), each scored on the store's validation split,
never on test. Fashion-MNIST-LT's val is 20 images per class: one image is half a point of
balanced accuracy, so the grid says which settings are clearly worse, not which is best by
less than a point; ties go to the cheaper setting (the earlier grid point).

    python benchmarks/spatial_defaults.py TABLE [TABLE ...] --out runs/spatial_defaults.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

from ltkit import console
from ltkit.augment.bank import load_bank
from ltkit.classifiers import Classifier
from ltkit.confusing import load_table, table_store_path
from ltkit.finetune import FinetuneConfig, accuracy_on, finetune_classifier, split_features
from ltkit.heads import map_bank
from ltkit.store import open_store

GRID = {"head_depth": (1, 2), "head_width": (0, 128), "lr": (0.05,), "epochs": (10,)}


def sweep(table_path: str, grid: dict = GRID, seed: int = 0) -> list[dict]:
    """Every grid point's validation accuracy on one store, in grid order."""
    table = load_table(table_path)
    rows = []
    with open_store(table_store_path(table)) as st:
        bank = map_bank(load_bank(st, table, device="cpu", spatial=True), st.shape("train", "features")[2:])
        phase1, val = Classifier.from_store(st), split_features(st, "val", "cpu", "features")
        for values in itertools.product(*grid.values()):
            point = dict(zip(grid, values))
            epochs = point.pop("epochs")
            cfg = FinetuneConfig.from_options({"head": "spatial", "classifier": "crt", "augment": "class-balanced",
                                               "seed": seed, **point})
            cfg = cfg.resolved(st.rows("train"), table.top)
            cfg = cfg.replace(iterations=-(-epochs * st.rows("train") // cfg.batches.batch_size))
            start = time.perf_counter()
            clf, _ = finetune_classifier(bank, phase1, cfg)
            rows.append(point | {"epochs": epochs, "val_acc": accuracy_on(clf.eval(), *val),
                                 "seconds": round(time.perf_counter() - start, 1)})
            print(json.dumps({"store": st.path.parent.name, **rows[-1]}), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="+", help="confusing-class tables of the stores to sweep")
    parser.add_argument("--out", type=Path, help="write the grid and the choice as JSON here")
    args = parser.parse_args()
    console.configure(quiet=True)
    per_store = {t: sweep(t) for t in args.tables}
    first = next(iter(per_store.values()))
    points = [{k: v for k, v in row.items() if k not in ("val_acc", "seconds")} for row in first]
    means = [statistics.mean(rows[i]["val_acc"] for rows in per_store.values()) for i in range(len(points))]
    best = max(range(len(points)), key=lambda i: (round(means[i], 3), -i))  # ties: the earlier (cheaper) point
    result = {"grid": per_store, "mean_val_acc": dict(zip(map(json.dumps, points), means)), "chosen": points[best]}
    print(json.dumps(result["chosen"]))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
