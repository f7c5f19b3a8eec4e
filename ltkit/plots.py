"""PNG plots of an evaluation (matplotlib, Agg canvas, no pyplot state); `ltkit.feature_plots`
draws the stored features (`ltkit plot-features`).

Each function takes plain values (the evaluation JSON's parts, arrays), writes one PNG
atomically and returns its path. Class names appear only inside the images, never in paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap, PowerNorm
from matplotlib.figure import Figure

from ltkit.artifacts import atomic_output

SPLIT_COLOURS = {"many": "#1f77b4", "medium": "#ff7f0e", "few": "#d62728"}
NAMED_TICKS = 40   # above this many classes, axes show indices instead of class names
ANNOTATE = 12      # up to this many classes, confusion cells carry their value
BLOCK_ABOVE = 400  # above this many classes, a confusion cell is a block of classes
DPI = 120


SOFTWARE = "ltkit"  # the PNG Software entry that marks a plot as ours (--force may replace it)


def short(name: str, width: int = 18, index: int | None = None) -> str:
    """A label of at most `width` characters; the middle goes, since names often share a prefix."""
    if not name.strip() and index is not None:
        return f"#{index}"  # a blank name still needs a label
    if len(name) <= width:
        return name
    tail = (width - 1) // 2
    return name[: width - 1 - tail] + "…" + name[-tail:]


def save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_output(path) as partial:
        fig.savefig(partial, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": SOFTWARE})
    return path


def is_ltkit_png(path: Path) -> bool:
    """True when ``path`` is a PNG that ltkit drew (its Software text chunk, near the start)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return head.startswith(b"\x89PNG\r\n\x1a\n") and SOFTWARE.encode() in head


def plot_per_class_accuracy(per_class: list[dict[str, Any]], thresholds: dict[str, int],
                            path: str | Path, title: str = "") -> Path:
    """Accuracy of each class against its training count (log x), split boundaries marked."""
    fig = Figure(figsize=(8, 4.8))
    ax = fig.add_subplot()
    rows = [r for r in per_class if r["accuracy"] is not None]
    counts = np.array([max(r["train_count"], 0.5) for r in rows])  # a 0 count sits at 0.5
    accs = np.array([100 * r["accuracy"] for r in rows])
    splits = np.array([r["split"] for r in rows])
    lo = min(counts.min() if counts.size else 1.0, thresholds["few"]) / 1.8
    hi = max(counts.max() if counts.size else 1.0, thresholds["many"]) * 2.2
    for name, colour in SPLIT_COLOURS.items():
        mask = splits == name
        if mask.any():
            ax.scatter(counts[mask], accs[mask], s=36, color=colour, alpha=0.85, zorder=3,
                       edgecolor="white", linewidth=0.5,
                       label=f"{name} ({int(mask.sum())} class{'es' if mask.sum() > 1 else ''}): "
                             f"mean {accs[mask].mean():.1f} %")
    # few < few-threshold <= medium <= many-threshold < many; region names along the top
    few_x, many_x = thresholds["few"], thresholds["many"]
    ax.axvspan(lo, few_x, color=SPLIT_COLOURS["few"], alpha=0.06, zorder=0)
    ax.axvspan(many_x, hi, color=SPLIT_COLOURS["many"], alpha=0.06, zorder=0)
    for x in (few_x, many_x):
        ax.axvline(x, color="0.35", linestyle="--", linewidth=1, zorder=1)
    regions = ((np.sqrt(lo * few_x), f"few (< {few_x})"),
               (np.sqrt(few_x * many_x), f"medium ({few_x}–{many_x})"),
               (np.sqrt(many_x * hi), f"many (> {many_x})"))
    for x, text in regions:
        ax.annotate(text, (x, 1.0), xycoords=("data", "axes fraction"), xytext=(0, 4),
                    textcoords="offset points", ha="center", fontsize=8, color="0.3")
    if len(rows) <= 20:  # name the points; alternate above / below so neighbours do not collide
        for i, idx in enumerate(np.argsort(counts, kind="stable")):
            above = accs[idx] < 10 or (i % 2 == 0 and accs[idx] <= 90)  # stay inside the axes
            ax.annotate(short(rows[idx]["name"], 14, rows[idx]["index"]), (counts[idx], accs[idx]),
                        xytext=(0, 6 if above else -7), textcoords="offset points",
                        ha="center", va="bottom" if above else "top", fontsize=7, color="0.25")
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(-6, 106)
    ax.set_xlabel("training images of the class (log scale)")
    ax.set_ylabel("test accuracy of the class (%)")
    ax.set_title(title or "Per-class accuracy against training count", pad=16)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="best", fontsize=8, framealpha=0.9)
    return save(fig, path)


def plot_confusion(confusion: np.ndarray, class_names: Sequence[str], train_counts: Sequence[int],
                   path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix, classes ordered by training count (most first).

    Up to BLOCK_ABOVE classes, one cell per class pair; above, one cell per pair of blocks of
    consecutive classes (a block's row: where its test images went, as fractions), so the
    image, the time and the PNG stay small whatever the class count (10,000 classes: 400 x 400)."""
    k = confusion.shape[0]
    order = np.argsort(-np.asarray(train_counts), kind="stable")  # (K,)
    size = max(1, -(-k // BLOCK_ABOVE)) if k > BLOCK_ABOVE else 1  # classes per cell
    cm = _ordered_blocks(confusion, order, size)  # (G, G) counts, G = ceil(K / size)
    totals = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(totals > 0, cm / np.maximum(totals, 1), np.nan)  # rows without tests: NaN
    side = float(np.clip(3 + 0.32 * k, 5, 14))
    fig = Figure(figsize=(side + 1.2, side))
    ax = fig.add_subplot()
    cmap = ListedColormap(_blues(256)).with_extremes(bad="0.85")  # rows without test images
    # a square-root colour scale keeps small off-diagonal fractions (head bias) visible; the
    # extent keeps the axes in class indices when a cell is a block of classes
    image = ax.imshow(np.ma.masked_invalid(norm), cmap=cmap, norm=PowerNorm(0.5, vmin=0, vmax=1),
                      interpolation="nearest" if len(cm) <= 200 else "antialiased",  # cells < pixels
                      extent=(-0.5, k - 0.5, k - 0.5, -0.5))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if k <= NAMED_TICKS:
        names = [short(class_names[c], index=int(c)) for c in order]
        ax.set_xticks(range(k), names, rotation=60, ha="right", rotation_mode="anchor",
                      fontsize=8 if k <= 20 else 6)
        ax.set_yticks(range(k), names, fontsize=8 if k <= 20 else 6)
    if k <= ANNOTATE:
        for i in range(k):
            for j in range(k):
                if not np.isnan(norm[i, j]) and cm[i, j] > 0:
                    text = f"{norm[i, j]:.2f}" if norm[i, j] >= 0.005 else "<.01"
                    ax.text(j, i, text, ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.35 else "0.15")
    axis = "" if k <= NAMED_TICKS else " (index by training count)"
    if size > 1:
        axis = f" (index by training count; cells: blocks of {size} classes)"
    ax.set_xlabel("predicted class" + axis)
    ax.set_ylabel("true class" + axis)
    ax.set_title(title or "Confusion matrix (rows normalised, colour scale square-root;\n"
                 "classes by training count, most first)", fontsize=10)
    return save(fig, path)


def _ordered_blocks(confusion: np.ndarray, order: np.ndarray, size: int) -> np.ndarray:
    """(G, G) float64 counts of `confusion` with classes in `order`, summed over blocks of `size`
    consecutive classes (G = ceil(K / size)); one pass over the rows, no (K, K) copy."""
    k = len(order)
    if size == 1:
        return confusion[np.ix_(order, order)].astype(np.float64)  # (K, K)
    block = np.empty(k, dtype=np.int64)
    block[order] = np.arange(k) // size  # (K,) the block of each class
    g = int(block.max()) + 1
    out = np.zeros((g, g))
    for b in range(g):
        row = np.asarray(confusion[order[b * size:(b + 1) * size]].sum(axis=0), dtype=np.float64)  # (K,)
        out[b] = np.bincount(block, weights=row, minlength=g)
    return out


def _blues(n: int) -> np.ndarray:
    """White to dark blue, so an empty cell reads as nothing."""
    t = np.linspace(0, 1, n)[:, None]
    white, blue = np.array([1.0, 1.0, 1.0]), np.array([0.03, 0.19, 0.42])
    return np.hstack([white + (blue - white) * t, np.ones((n, 1))])


def plot_reliability(calibration: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Reliability diagram: accuracy per confidence bin against the diagonal; counts below."""
    edges = np.array(calibration["edges"])
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    acc = np.array([np.nan if a is None else a for a in calibration["accuracy"]])
    conf = np.array([np.nan if c is None else c for c in calibration["confidence"]])
    count = np.array(calibration["count"])
    fig = Figure(figsize=(5.6, 6.4))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    filled = ~np.isnan(acc)
    top.bar(centres[filled], acc[filled], width=width[filled], color="#1f77b4", alpha=0.85,
            edgecolor="white", label="accuracy in the bin")
    gap_lo, gap_hi = np.minimum(acc, conf)[filled], np.abs(acc - conf)[filled]
    top.bar(centres[filled], gap_hi, bottom=gap_lo, width=width[filled], color="#d62728",
            alpha=0.3, edgecolor="#d62728", linewidth=1, label="gap to mean confidence")
    top.plot([0, 1], [0, 1], color="0.3", linestyle="--", linewidth=1, label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    ece = calibration["ece"]
    top.set_title(title or f"Reliability ({calibration['bins']} bins), ECE = "
                  + ("n/a" if ece is None else f"{100 * ece:.2f} %"), pad=28)
    top.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=7.5,
               frameon=False)  # above the axes: bars may fill any corner
    top.grid(True, alpha=0.3)
    bottom.bar(centres, count, width=width, color="0.55", edgecolor="white")
    bottom.set_xlabel("confidence (top softmax probability)")
    bottom.set_ylabel("samples")
    bottom.grid(True, alpha=0.3)
    return save(fig, path)
