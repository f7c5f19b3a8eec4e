"""PNG plots of an evaluation and of stored features (matplotlib, Agg canvas, no pyplot state).

Each function takes plain values (the evaluation JSON's parts, arrays), writes one PNG
atomically and returns its path. Class names appear only inside the images, never in paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap, PowerNorm
from matplotlib.figure import Figure

from ltkit import console
from ltkit.artifacts import atomic_output, check_output, resolve_input
from ltkit.errors import ConfigError, DataError
from ltkit.augment import TAU_G, TAU_S

SPLIT_COLOURS = {"many": "#1f77b4", "medium": "#ff7f0e", "few": "#d62728"}
NAMED_TICKS = 40   # above this many classes, axes show indices instead of class names
ANNOTATE = 12      # up to this many classes, confusion cells carry their value
BLOCK_ABOVE = 400  # above this many classes, a confusion cell is a block of classes
DPI = 120
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f")  # one colour per plotted class (tab10)


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


# ---- ltkit plot-features: pooled features and Chu et al.'s figure 4 --------------------------

@dataclass
class FeaturePlotConfig:
    classes: list[str] | None = None  # class names or indices; None: the 2 largest + 2 smallest
    split: str = "train"              # store split whose images are drawn
    per_class: int = 60               # images drawn per class (fewer when a class has fewer)
    vectors: int = 300                # location vectors shown per class and kind, at most
    tau_s: float = TAU_S               # class-specific locations: CAM > tau_s (FSA's default)
    tau_g: float = TAU_G               # class-generic locations: CAM < tau_g (FSA's default)
    seed: int = 0                     # which images and vectors are drawn
    normalize: bool = True            # L2-normalise each vector before PCA: directions, which
                                      # the classifier reads, not norms, which a few outliers rule

    def validate(self) -> None:
        if self.per_class < 1 or self.vectors < 1:
            raise ConfigError("--per-class and --vectors must be at least 1")
        for name in ("tau_s", "tau_g"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ConfigError(f"--{name.replace('_', '-')} must lie strictly between 0 and 1 "
                                  "(CAMs are normalised to [0, 1])")


def pick_classes(wanted: list[str] | None, names: list[str], counts: np.ndarray) -> list[int]:
    """Class indices from names or indices; by default the two largest and two smallest."""
    if not wanted:
        order = np.lexsort((np.arange(len(counts)), -counts))  # count descending, then index
        order = order[counts[order] > 0]
        return sorted(set(order[:2].tolist() + order[-2:].tolist()), key=lambda c: -counts[c])
    picked = []
    for item in wanted:
        if item in names:
            picked.append(names.index(item))
        elif item.lstrip("-").isdigit() and 0 <= int(item) < len(names):
            picked.append(int(item))
        else:
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise ConfigError(f"--classes: {item!r} is neither a class name nor an index below "
                              f"{len(names)}; the store's classes: {shown}")
    if len(set(picked)) > len(PALETTE):
        raise ConfigError(f"--classes: at most {len(PALETTE)} classes fit one plot")
    return list(dict.fromkeys(picked))


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, C) -> mean (C,), the top two principal axes (2, C), their variance shares (2,)."""
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)  # vt (r, C)
    share = s**2 / max(float((s**2).sum()), 1e-12)
    axes = np.zeros((2, x.shape[1]))
    axes[: min(2, len(vt))] = vt[:2]
    return mean, axes, np.pad(share[:2], (0, max(0, 2 - len(share))))


def gather_features(st, classes: list[int], cfg: FeaturePlotConfig) -> dict[str, Any]:
    """Pooled features and location vectors (CAM > tau_s / < tau_g) of the chosen classes."""
    rng = np.random.default_rng(cfg.seed)
    labels = st.read(cfg.split, "labels")  # (N,)
    rows = [np.sort(rng.permutation(np.flatnonzero(labels == c))[: cfg.per_class]) for c in classes]
    index = np.concatenate(rows)  # (n,)
    owner = np.repeat(np.arange(len(classes)), [len(r) for r in rows])  # (n,) position in classes
    out = {"pooled": st.read(cfg.split, "pooled", index=index), "pooled_owner": owner}
    if not (st.has(cfg.split, "features") and st.has(cfg.split, "cams")):
        return out
    fmap = st.read(cfg.split, "features", index=index).astype(np.float32)  # (n, C, H, W)
    cams = st.read(cfg.split, "cams", index=index).astype(np.float32)      # (n, H, W)
    vecs = fmap.transpose(0, 2, 3, 1)                                      # (n, H, W, C)
    nonzero = np.abs(vecs).sum(axis=3) > 0                                 # (n, H, W)
    for kind, mask in (("specific", cams > cfg.tau_s), ("generic", cams < cfg.tau_g)):
        keep_v, keep_o = [], []
        for i in range(len(classes)):
            chosen = vecs[(owner == i)[:, None, None] & mask & nonzero]   # (m, C)
            chosen = chosen[rng.permutation(len(chosen))[: cfg.vectors]]
            keep_v.append(chosen)
            keep_o.append(np.full(len(chosen), i))
        out[kind], out[f"{kind}_owner"] = np.concatenate(keep_v), np.concatenate(keep_o)
    return out


def plot_features(store: str | Path, out: str | Path | None, cfg: FeaturePlotConfig, *,
                  force: bool = False) -> Path:
    """`ltkit plot-features`: pooled features | class-specific | class-generic, PCA to 2-D."""
    from ltkit.store import open_store

    cfg.validate()
    path = resolve_input(store)
    out = check_output(out or path.with_name(path.stem + ".features.png"), force, inputs=[path],
                       replaces=is_ltkit_png, kind="ltkit plot")
    with open_store(path) as st:
        if cfg.split not in st.splits:
            raise DataError(f"the store has no {cfg.split!r} split (it has "
                            f"{', '.join(st.splits)}); choose --split from those")
        classes = pick_classes(cfg.classes, st.class_names, st.train_counts)
        data = gather_features(st, classes, cfg)
        legend = [f"{short(st.class_names[c], 16)} ({st.train_counts[c]} train)" for c in classes]
    spatial = "specific" in data
    if cfg.normalize:
        for key in ("pooled", "specific", "generic"):
            if key in data:
                norms = np.linalg.norm(data[key], axis=1, keepdims=True)  # (n, 1)
                data[key] = data[key] / np.maximum(norms, 1e-12)
    if not spatial:
        console.warn(f"the store keeps no feature maps or CAMs for {cfg.split!r}; plotting the "
                     "pooled features only (extract with --spatial-splits to keep them)")
    fig = Figure(figsize=(15 if spatial else 5.6, 5.2))
    axes = fig.subplots(1, 3 if spatial else 1, squeeze=False)[0]
    _scatter(axes[0], data["pooled"], data["pooled_owner"], legend,
             f"pooled features ({cfg.split} images)", *pca_2d(data["pooled"]))
    if spatial:
        both = np.concatenate([data["specific"], data["generic"]])
        if len(both) < 2:
            raise DataError("the chosen classes have no location vectors at these thresholds; "
                            "pick other classes or --tau-s / --tau-g")
        pca = pca_2d(both)  # one projection for both panels, so they can be compared
        _scatter(axes[1], data["specific"], data["specific_owner"], legend,
                 f"class-specific locations (CAM > {cfg.tau_s:g})", *pca)
        _scatter(axes[2], data["generic"], data["generic_owner"], legend,
                 f"class-generic locations (CAM < {cfg.tau_g:g})", *pca)
        lims = [np.array([a.get_xlim(), a.get_ylim()]) for a in axes[1:]]
        for a in axes[1:]:
            a.set_xlim(min(l[0][0] for l in lims), max(l[0][1] for l in lims))
            a.set_ylim(min(l[1][0] for l in lims), max(l[1][1] for l in lims))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=9,
               frameon=False, markerscale=1.6)
    fig.suptitle("Features by class" + (", L2-normalised," if cfg.normalize else "")
                 + " PCA to 2-D" + ("; middle and right share one projection "
                                                   "(Chu et al., figure 4)" if spatial else ""),
                 fontsize=12)
    fig.subplots_adjust(top=0.8, bottom=0.2, wspace=0.25)
    return save(fig, out)


def _scatter(ax, x: np.ndarray, owner: np.ndarray, legend: list[str], title: str,
             mean: np.ndarray, axes2: np.ndarray, share: np.ndarray) -> None:
    xy = (x - mean) @ axes2.T  # (n, 2)
    for i, name in enumerate(legend):
        sel = owner == i
        ax.scatter(xy[sel, 0], xy[sel, 1], s=10, alpha=0.55, color=PALETTE[i], label=name,
                   edgecolor="none")
    ax.set_title(f"{title}\n{len(x)} vectors", fontsize=10)
    ax.set_xlabel(f"PC 1 ({100 * share[0]:.0f} % of variance)")
    ax.set_ylabel(f"PC 2 ({100 * share[1]:.0f} % of variance)")
    ax.grid(True, alpha=0.3)
