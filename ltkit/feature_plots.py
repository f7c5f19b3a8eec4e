"""`ltkit plot-features`: pooled features of chosen classes beside their class-specific and
class-generic location vectors, PCA to 2-D (Chu et al.'s figure 4). Plain arrays from the
store in, one PNG out (matplotlib Agg canvas, no pyplot state); class names appear only
inside the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ltkit import console
from ltkit.artifacts import check_output, resolve_input
from ltkit.augment import TAU_G, TAU_S
from ltkit.errors import ConfigError, DataError
from ltkit.plots import is_ltkit_png, save, short

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f")  # one colour per plotted class (tab10)


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
    if not np.isfinite(fmap).all():  # the reader leaves maps unchecked (their size); these few are cheap
        raise DataError(f"the {cfg.split} feature maps of the chosen classes hold NaN or infinite values; "
                        "the store is damaged or its backbone diverged: re-extract it")
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


def plot_features(store: str | Path, cfg: FeaturePlotConfig, *, out: str | Path | None = None,
                  force: bool = False) -> Path:
    """`ltkit plot-features`: pooled features | class-specific | class-generic, PCA to 2-D, as
    one PNG at ``out`` (default: ``<store stem>.features.png`` beside the store); its path."""
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
