"""Data sets: sources (registry `DATASETS`), long-tail profiles and the train/val/test splits.

    from ltkit.data import DatasetSpec, build_splits
    splits = build_splits(DatasetSpec("cifar10-lt", root="data", imbalance=100))

See `ltkit.data.profile` for the LDAM-DRW protocol and how the validation split is taken.
"""

from ltkit.data import cifar, fashion_mnist, imagefolder, synthetic  # noqa: F401  (register sources)
from ltkit.data.build import build_splits, chosen_spec
from ltkit.data.fingerprint import data_fingerprint
from ltkit.data.profile import long_tail_counts, resolve_counts, select_long_tail
from ltkit.data.sources import DATASETS, SourceData
from ltkit.data.spec import DatasetSpec, Splits, check_spec, spec_from_dict

__all__ = [
    "DATASETS", "DatasetSpec", "SourceData", "Splits", "build_splits", "check_spec", "chosen_spec", "data_fingerprint",
    "long_tail_counts", "resolve_counts", "select_long_tail", "spec_from_dict",
]
