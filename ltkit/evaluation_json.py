"""The evaluation JSON that `ltkit evaluate` prints: its format, the conversion of a result to
plain JSON values (`jsonable`), and reading one back (`load_evaluation`, `parse_evaluation`),
validated so that what `compare` reads from it is there and sane. Keys: ``docs/evaluate.md``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ltkit.errors import ArtifactError

FORMAT = "ltkit-evaluation"
FORMAT_VERSION = 1


def jsonable(obj: Any) -> Any:
    """A value JSON can hold: arrays and tensors to lists, paths to strings, NaN / inf to None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


def load_evaluation(path: str | Path) -> dict[str, Any]:
    """An evaluation JSON written by `ltkit evaluate` (stdout or a report's metrics.json)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is not readable JSON ({exc}); give the JSON that "
                            "`ltkit evaluate` printed") from None
    return parse_evaluation(text, path)


def parse_evaluation(text: str, where: str | Path) -> dict[str, Any]:
    """The evaluation in ``text`` (from ``where``: a path, or stdin), validated: what `compare`
    reads from it is there and sane (accuracies in [0, 1] or null, counts whole numbers, a
    known format version); else one ArtifactError."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ArtifactError(f"{where} is not readable JSON ({str(exc)[:80]}); give the JSON that "
                            "`ltkit evaluate` printed") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ArtifactError(f"{where} is not an ltkit evaluation (no format {FORMAT!r}); give "
                            "the JSON that `ltkit evaluate` printed")
    version = obj.get("format_version", FORMAT_VERSION)  # absent in hand-made test results only
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise ArtifactError(f"{where} is an evaluation of format version {version!r}; this ltkit reads "
                            f"version {FORMAT_VERSION}: evaluate the classifier again")
    problem = _evaluation_problem(obj)
    if problem:
        raise ArtifactError(f"{where} is a damaged evaluation ({problem}); evaluate the classifier again")
    return obj


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_accuracy(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                              and math.isfinite(value) and 0.0 <= value <= 1.0)


def _group_problem(name: str, group: Any) -> str | None:
    if not isinstance(group, dict) or not _is_accuracy(group.get("accuracy")):
        return f"{name} accuracy is not a number in [0, 1] or null"
    if any(key in group and not _is_count(group[key]) for key in ("classes", "samples")):
        return f"{name} counts are not whole numbers"
    return None


def _evaluation_problem(obj: dict[str, Any]) -> str | None:
    """What is wrong with the parts of an evaluation that `compare` reads, or None."""
    for key in ("top1", "balanced_accuracy"):
        if not _is_accuracy(obj.get(key)):
            return f"{key} is not a number in [0, 1] or null"
    splits = obj.get("splits")
    if not isinstance(splits, dict):
        return "no splits"
    groups = [(f"the {s} split's", splits.get(s)) for s in ("many", "medium", "few")]
    if obj.get("fsa") is not None:
        fsa = obj["fsa"]
        if not isinstance(fsa, dict):
            return "its FSA head / tail is not a record"
        groups += [(f"the FSA {s}", fsa.get(s)) for s in ("head", "tail")]
    for name, group in groups:
        problem = _group_problem(name, group)
        if problem:
            return problem
    if any(key in obj and not _is_count(obj[key]) for key in ("samples", "num_classes")):
        return "its counts are not whole numbers"
    for key in ("source", "store"):
        if not isinstance(obj.get(key), dict) or not isinstance(obj[key].get("path"), str):
            return f"no {key} path"
    thresholds = obj.get("thresholds")
    if not isinstance(thresholds, dict) or not all(_is_count(thresholds.get(k)) for k in ("many", "few")):
        return "its thresholds are not whole numbers"
    if not isinstance(obj.get("on"), str) or not isinstance(obj.get("method", "?"), str):
        return "its split or method is not a name"
    if not isinstance(obj.get("options") or {}, dict):
        return "its options are not a record"
    tau = obj.get("tau")
    if tau is not None and not (isinstance(tau, dict) and isinstance(tau.get("value"), (int, float))
                                and not isinstance(tau.get("value"), bool) and math.isfinite(tau["value"])
                                and isinstance(tau.get("mode"), str)):
        return "its tau is not a number with a mode"
    return None
