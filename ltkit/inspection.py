"""What any ltkit artifact holds, as plain JSON (`ltkit inspect`): its kind, config, lineage,
history and class counts.

The kind is read from the artifact itself, never from its name: an HDF5 file is a feature
store; a torch file says its ``format`` (`ltkit.outputs.torch_format`: a backbone checkpoint,
whose resume state ``NAME.partial`` also holds an optimiser; a classifier; a confusing-class
table); a JSON file is an evaluation when its ``format`` says so; a CSV whose header is a run
log's is one (`ltkit.runlog`); a folder is an evaluation report when it holds the report's
marker. Anything else is one line naming what inspect reads. Torch files are loaded with
``weights_only=True`` only, their tensors memory-mapped and summarised by shape, never printed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ltkit.errors import ArtifactError
from ltkit.registry import Registry

KINDS = "a feature store, a backbone checkpoint or its resume state, a classifier, a confusing-class table, " \
        "an evaluation JSON, a run log (.metrics.csv) or an evaluation report folder"
Describer = Callable[[Path, dict[str, Any]], dict[str, Any]]  # (path, loaded torch dict) -> summary
TORCH_FORMATS: Registry[Describer] = Registry("torch artifact format")


def inspect_artifact(path: str | os.PathLike) -> dict[str, Any]:
    """The plain-JSON summary of the artifact at ``path``, ``kind`` first; ArtifactError (one
    line) for a file that is no ltkit artifact."""
    from ltkit.evaluation_json import jsonable
    from ltkit.outputs import torch_format
    from ltkit.report import is_report
    from ltkit.runlog import is_run_log
    from ltkit.store import is_store

    path = Path(path).expanduser()
    if path.is_dir():
        if not is_report(path):
            raise ArtifactError(f"{path} is a folder but not an ltkit evaluation report; inspect reads {KINDS}")
        return jsonable(_report(path))
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist; give the path of an ltkit artifact")
    if is_store(path) or path.suffix in (".h5", ".hdf5"):  # open_store says what is wrong with a damaged one
        return {"kind": "store"} | _store(path)
    fmt = torch_format(path)
    if fmt is not None and fmt in TORCH_FORMATS:
        return jsonable(TORCH_FORMATS.get(fmt)(path, _load(path, fmt)))
    if is_run_log(path):
        return jsonable(_run_log(path))
    evaluation = _evaluation_or_none(path)
    if evaluation is not None:
        return jsonable({"kind": "evaluation", "path": str(path), "evaluation": evaluation})
    found = f" (an artifact of format {fmt!r} this ltkit does not know)" if fmt else ""
    raise ArtifactError(f"{path} is not an ltkit artifact{found}; inspect reads {KINDS}")


def _load(path: Path, fmt: str) -> dict[str, Any]:
    from ltkit.artifacts import load_torch_artifact

    return load_torch_artifact(path, fmt)


def _classes(names: list[str], counts: list[int]) -> dict[str, Any]:
    """Per-class names, training counts and many / medium / few groups, and the group sizes."""
    from ltkit.metrics import split_of

    groups = split_of(counts)  # (K,)
    return {"classes": [{"name": str(n), "train_count": int(c), "group": str(g)}
                        for n, c, g in zip(names, counts, groups)],
            "groups": {g: int((groups == g).sum()) for g in ("many", "medium", "few")}}


def _store(path: Path) -> dict[str, Any]:
    from ltkit.store import describe, open_store

    with open_store(path) as st:
        return describe(st)


def _parameters(state: dict[str, Any]) -> int:
    return int(sum(t.numel() for t in state.values() if hasattr(t, "numel")))


@TORCH_FORMATS.register("ltkit-backbone")
def _checkpoint(path: Path, ckpt: dict[str, Any]) -> dict[str, Any]:
    """A backbone checkpoint, or the resume state of an unfinished run (it holds an optimiser)."""
    resume = "optimizer" in ckpt
    config = ckpt.get("config", {})
    return {"kind": "resume-state" if resume else "backbone-checkpoint", "path": str(path),
            "format": ckpt["format"], "format_version": ckpt.get("format_version"),
            "size_bytes": path.stat().st_size, "arch": ckpt.get("arch"), "head": ckpt.get("head"),
            "head_scale": ckpt.get("head_scale"), "num_classes": ckpt.get("num_classes"),
            "in_channels": ckpt.get("in_channels"), "parameters": _parameters(ckpt.get("model_state", {})),
            "epoch": ckpt.get("epoch"), "epochs": config.get("epochs"), "world_size": ckpt.get("world_size"),
            **_classes(ckpt.get("class_names", []), ckpt.get("class_counts", [])),
            "dataset": ckpt.get("dataset"), "config": config, "data_fingerprint": ckpt.get("data_fingerprint"),
            "lineage": ckpt.get("lineage"), "versions": ckpt.get("versions"),
            "metrics": _val_summary(ckpt.get("metrics")),
            "history": [{"epoch": i} | row for i, row in enumerate(ckpt.get("history", []), 1)]}  # older: unnumbered


def _val_summary(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """The final validation metrics without the per-class list (the history has the curve)."""
    if not metrics:
        return None
    return {k: v for k, v in metrics.items() if k != "per_class"}


@TORCH_FORMATS.register("ltkit-classifier")
def _classifier(path: Path, obj: dict[str, Any]) -> dict[str, Any]:
    """A Phase-II classifier; its class counts are its store's, when that store is still there."""
    state = obj.get("classifier", {})
    weight = state.get("weight")
    parents = obj.get("lineage", {}).get("parents", {})
    return {"kind": "classifier", "path": str(path), "format": obj["format"],
            "format_version": obj.get("format_version"), "size_bytes": path.stat().st_size,
            "method": obj.get("method"),
            "classifier": {"kind": state.get("kind"), "shape": list(weight.shape) if weight is not None else None,
                           "bias": state.get("bias") is not None, "scale": state.get("scale")},
            "head": _head(obj.get("head")),
            **_store_classes(parents.get("store", {}).get("path")),
            "options": obj.get("options"), "lineage": obj.get("lineage"), "history": obj.get("history", [])}


def _head(head: dict[str, Any] | None) -> dict[str, Any]:
    """What the classifier reads: pooled features (``linear``) or the maps through conv blocks."""
    if not head:
        return {"kind": "linear"}
    return {"kind": head.get("kind"), "config": head.get("config"), "channels": head.get("channels")}


def _store_classes(store: str | None) -> dict[str, Any]:
    """The class counts of the store at ``store`` (a lineage path), or why there are none."""
    from ltkit.errors import LtkitError
    from ltkit.store import open_store

    if store is None:
        return {"classes": None, "classes_from": None}
    try:
        with open_store(store) as st:
            names, counts = list(st.class_names), [int(c) for c in st.train_counts]
    except (LtkitError, OSError) as exc:
        return {"classes": None, "classes_from": f"{store} (not readable: {str(exc)[:120]})"}
    return _classes(names, counts) | {"classes_from": store}


@TORCH_FORMATS.register("ltkit-confusing-table")
def _table(path: Path, obj: dict[str, Any]) -> dict[str, Any]:
    from ltkit.confusing_table import ConfusingTable

    table = ConfusingTable.from_dict(obj, path)  # validated: a damaged table is one line
    names = table.class_names
    head = set(table.head_classes.tolist())
    info = _classes(names, table.train_counts.tolist())
    for k, row in enumerate(info["classes"]):
        row["role"] = "head" if k in head else "tail"
    return {"kind": "confusing-table", "path": str(path), "format": obj["format"],
            "format_version": obj.get("format_version"), "size_bytes": path.stat().st_size,
            "head_ratio": table.head_ratio, "head_fraction": table.head_fraction, "top": table.top,
            "head": len(head), "tail": len(table.tail_classes), **info,
            "confusing": [{"tail": names[t], "confusing": [names[c] for c in row], "scores": scores}
                          for t, row, scores in zip(table.tail_classes.tolist(), table.confusing.tolist(),
                                                    table.scores.tolist())],
            "lineage": table.lineage, "versions": table.versions}


def _run_log(path: Path) -> dict[str, Any]:
    from ltkit.runlog import read_log

    rows = read_log(path)
    with open(path, newline="") as fh:
        columns = fh.readline().strip().split(",")
    parsed = [{k: _number(v) for k, v in row.items()} for row in rows]
    return {"kind": "run-log", "path": str(path), "step": columns[0], "columns": columns, "rows": parsed}


def _number(text: str | None) -> int | float | str | None:
    """A log cell as a number (an empty cell: None; a cell edited into text stays text)."""
    if text in ("", None):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _evaluation_or_none(path: Path) -> dict[str, Any] | None:
    """The evaluation in a JSON file (validated), or None when the file is not one at all."""
    from ltkit.evaluation_json import FORMAT, parse_evaluation

    try:
        with open(path, "rb") as fh:
            if fh.read(1).strip() not in (b"{", b""):
                return None
        text = path.read_text()
        if json.loads(text).get("format") != FORMAT:
            return None
    except (OSError, UnicodeDecodeError, ValueError, AttributeError, RecursionError):
        return None
    return parse_evaluation(text, path)  # an evaluation, damaged: its own one-line error


def _report(path: Path) -> dict[str, Any]:
    from ltkit.evaluation_json import load_evaluation

    return {"kind": "report", "path": str(path),
            "files": sorted(entry.name for entry in path.iterdir()),
            "evaluation": load_evaluation(path / "metrics.json")}
