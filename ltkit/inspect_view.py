"""The human summary `ltkit inspect` prints on stderr, one renderer per artifact kind (the
plain-JSON summaries of `ltkit.inspection`). Paths, names and options come from the file:
they are printed as text (escaped), never read as rich markup."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.markup import escape
from rich.table import Table

from ltkit import console
from ltkit.runlog import COLUMNS

ROWS_SHOWN = 30  # rows printed at each end of a long table (classes, history); --json has all
HISTORY_SKIP = ("epoch_seconds", "generated", "val_acc")  # history fields the table leaves to --json
HEADERS = {"train_acc": "train acc", "val_balanced_acc": "val bal", "val_many_acc": "val many",
           "val_medium_acc": "val med", "val_few_acc": "val few", "tail_acc": "tail acc", "head_acc": "head acc",
           "seconds": "s", "iteration": "iter"}


def _print(text: str) -> None:
    console.console.print(escape(text), soft_wrap=True)


def _shown(n: int) -> list[int]:
    """Row indices to print of n: all, or both ends with -1 where the rest is left out."""
    return list(range(n)) if n <= 2 * ROWS_SHOWN else [*range(ROWS_SHOWN), -1, *range(n - ROWS_SHOWN, n)]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.3g}" if isinstance(value, float) else escape(str(value))


def _rows_table(rows: list[dict[str, Any]], title: str) -> None:
    """A history or log as a table: every numeric field, in the order first seen."""
    if not rows:
        return
    seen = dict.fromkeys(k for row in rows for k in row)
    columns = [k for k in (*("epoch", "iteration"), *COLUMNS) if k in seen]
    columns += [k for k in seen if k not in columns and k not in HISTORY_SKIP]
    table = Table(*(HEADERS.get(c, c) for c in columns), box=None, pad_edge=False, title=title, title_justify="left")
    for i in _shown(len(rows)):
        table.add_row(*([f"... {len(rows) - 2 * ROWS_SHOWN} more"] + [""] * (len(columns) - 1) if i < 0
                        else [_cell(rows[i].get(c)) for c in columns]))
    console.console.print(table)


def _classes(info: dict[str, Any], extra: str = "") -> None:
    """The class counts: a one-line summary, then one row per class (both ends of a long list)."""
    classes = info.get("classes")
    if not classes:
        if info.get("classes_from"):
            _print(f"class counts: its store {info['classes_from']}")
        return
    counts = [c["train_count"] for c in classes]
    g = info["groups"]
    _print(f"{len(counts)} classes, {sum(counts)} training images (largest {max(counts)}, smallest {min(counts)}): "
           f"many {g['many']}, medium {g['medium']}, few {g['few']}")
    table = Table("class", "name", "train", "group", *([extra] if extra else []), box=None, pad_edge=False)
    for k in _shown(len(classes)):
        if k < 0:  # thousands of rows on a terminal help nobody: the ends, and where the rest is
            table.add_row("...", f"{len(classes) - 2 * ROWS_SHOWN} more (--json lists all)", "", "")
            continue
        c = classes[k]
        table.add_row(str(k), escape(c["name"]), str(c["train_count"]), c["group"],
                      *([escape(str(c.get(extra, "")))] if extra else []))
    console.console.print(table)


def _lineage(lineage: dict[str, Any] | None) -> None:
    if not lineage:
        return
    parents = ", ".join(f"{role} {p['path']} (sha256 {str(p.get('sha256'))[:12]})"
                        for role, p in lineage.get("parents", {}).items())
    versions = lineage.get("versions", {})
    _print(f"made {lineage.get('created')}, seed {lineage.get('seed')}, ltkit {versions.get('ltkit')}, "
           f"torch {versions.get('torch')}" + (f"; from {parents}" if parents else ""))


def _options(options: dict[str, Any] | None, skip: tuple[str, ...] = ()) -> None:
    flat = {k: v for k, v in (options or {}).items() if k not in skip and not isinstance(v, dict)}
    if flat:
        _print("options: " + ", ".join(f"{k}={v}" for k, v in flat.items()))


def _checkpoint(info: dict[str, Any]) -> None:
    what = "resume state of an unfinished run" if info["kind"] == "resume-state" else "backbone checkpoint"
    _print(f"{info['path']}  ltkit {what}, {info['size_bytes'] / 2**20:.1f} MiB")
    scale = f", scale {info['head_scale']:g}" if info.get("head_scale") is not None else ""
    _print(f"{info['arch']} ({info['head']} head{scale}), {info['in_channels']} input channel(s), "
           f"{info['parameters']:,} parameters; epoch {info['epoch']} of {info['epochs']}")
    data = info.get("dataset") or {}
    _print("data set: " + ", ".join(f"{k} {data[k]}" for k in ("name", "root", "imbalance", "profile",
                                                                   "val_per_class", "image_size") if k in data))
    _options(info.get("config"), skip=("data",))
    _classes(info)
    if info.get("metrics"):
        m = info["metrics"]
        _print(f"validation: balanced acc {m['balanced_acc']:.4f}; " + ", ".join(
            f"{g} {v['accuracy']:.4f}" if v["accuracy"] is not None else f"{g} empty"
            for g, v in m["groups"].items()))
    _rows_table(info["history"], "history")
    _lineage(info.get("lineage"))


def _reads(head: dict[str, Any]) -> str:
    """`` on ...``: what the classifier reads from the store."""
    if head["kind"] != "spatial":
        return ", on pooled features"
    config = head.get("config") or {}
    return (f", on the maps through a spatial head (depth {config.get('depth')}, width {config.get('width')}, "
            f"kernel {config.get('kernel')}, {config.get('block', 'conv')} blocks, {head.get('channels')} channels in)")


def _classifier(info: dict[str, Any]) -> None:
    head = info["classifier"]
    _print(f"{info['path']}  ltkit classifier ({info['method']}), {head['kind']} "
           f"{'x'.join(map(str, head['shape'] or []))}" + (", bias" if head["bias"] else "")
           + _reads(info.get("head") or {"kind": "linear"}))
    _options(info.get("options"), skip=("request",))
    _classes(info)
    _rows_table(info["history"], "history")
    _lineage(info.get("lineage"))


def _table(info: dict[str, Any]) -> None:
    _print(f"{info['path']}  ltkit confusing-class table: head ratio {info['head_ratio']:g} "
           f"(the head holds {info['head_fraction']:.3f} of the images), {info['head']} head and "
           f"{info['tail']} tail classes, top {info['top']}")
    _classes(info, extra="role")
    rows = [{"tail": r["tail"], **{f"confusing {i + 1}": f"{n} ({s:.3f})" for i, (n, s) in
                                   enumerate(zip(r["confusing"], r["scores"]))}} for r in info["confusing"]]
    _rows_table(rows, "confusing classes (mean Phase-I softmax)")
    _lineage(info.get("lineage"))


def _evaluation(info: dict[str, Any]) -> None:
    from ltkit.report import print_summary

    if info["kind"] == "report":
        _print(f"{info['path']}  ltkit evaluation report: {', '.join(info['files'])}")
    else:
        _print(f"{info['path']}  ltkit evaluation")
    print_summary(info["evaluation"])


def _run_log(info: dict[str, Any]) -> None:
    _print(f"{info['path']}  ltkit run log, {len(info['rows'])} row(s), one per {info['step']}")
    _rows_table(info["rows"], "")


def _store(info: dict[str, Any]) -> None:
    size = info["size_bytes"]
    console.console.print(f"[bold]{escape(info['path'])}[/bold]  ltkit feature store v{info['schema_version']}, "
                          f"{size / 2**20:.1f} MiB", soft_wrap=True)
    arrays = Table("split", "array", "shape", "dtype", box=None, pad_edge=False)
    for split, body in info["splits"].items():
        for name, spec in body["arrays"].items():
            arrays.add_row(escape(split), escape(name), "x".join(map(str, spec["shape"])), spec["dtype"])
    console.console.print(arrays)
    _classes(info)
    p, head = info["provenance"], info["classifier"]
    scale = f", scale {head['scale']:g}" if head["scale"] is not None else ""
    _print(f"backbone: {p['arch']} ({p['head']} head{scale}), maps from {p['layer']}, "
           f"{'x'.join(map(str, info['feature_shape']))}; kept for "
           f"{', '.join(info['spatial_splits']) or 'no split'}; {info['train_views']} augmented views")
    _print(f"from {p['backbone_path']} (sha256 {str(p['backbone_sha256'])[:12]}), data set "
           f"{p['dataset'].get('name')}, ltkit {p['ltkit_version']}, seed {p['seed']}, created {p['created']}")


RENDERERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "store": _store, "backbone-checkpoint": _checkpoint, "resume-state": _checkpoint, "classifier": _classifier,
    "confusing-table": _table, "evaluation": _evaluation, "report": _evaluation, "run-log": _run_log}


def render(info: dict[str, Any]) -> None:
    """The human summary of an `ltkit.inspection.inspect_artifact` summary, on stderr."""
    RENDERERS[info["kind"]](info)
