"""`extract`: run a trained backbone once over its data and cache what it sees in a store.

The recipe (`_extract_to`): 1. checkpoint and data -> 2. map shape, store layout and the
options that fingerprint it -> 3. create or resume ``OUT.partial`` (ltkit.store.resume) ->
4. one pass per part (train, val, bound, test, views) in fixed batches from row 0, so a
resumed run ends with the same store -> 5. verify, mark complete, compress (optional), rename.
Under torchrun each rank extracts a shard, and rank 0 joins them. What the store records
about how it was made (the options, the root attributes) is built in `ltkit.extract_record`.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from ltkit import choices, console, distributed, testhooks
from ltkit.artifacts import (
    check_not_input,
    check_output,
    commit_partial,
    file_sha256,
    option_diff,
    other_options,
    partial_path,
    resolve_input,
    reuse_existing,
)
from ltkit.cams import label_cams
from ltkit.checkpoint import load_backbone
from ltkit.classifiers import Classifier
from ltkit.device import autocast, resolve_precision, seed_everything
from ltkit.errors import ArtifactError, ConfigError, DataError, StoreError
from ltkit.extract_parts import Part, SeededViews, checkpoint_data, make_parts, view_seed
from ltkit.extract_record import root_attrs, store_options
from ltkit.store import (
    COMPRESSIONS,
    SPLITS,
    VIEWS,
    BackgroundWriter,
    Progress,
    StoreLayout,
    StoreWriter,
    create_store,
    earlier_store,
    join_shards,
    open_store,
    pack_store,
    resumable,
)

__all__ = ["ExtractConfig", "SeededViews", "extract", "extract_batch", "view_seed"]
PRECISIONS = choices.PRECISIONS
OUTPUT = {"replaces": earlier_store, "kind": "feature store"}  # --force replaces only an earlier store


@dataclass
class ExtractConfig:
    data: str | None = None  # data set name replacing the checkpoint's (must have the same classes)
    root: str | None = None  # data folder replacing the checkpoint's
    spatial_splits: tuple[str, ...] = ("train",)  # splits that keep feature maps and CAMs; () none
    train_views: int = 0  # augmented views per training image (0: none; 2-10 typical)
    batch_size: int = 256  # images per forward pass; part of the resume fingerprint
    workers: int = 0  # DataLoader worker processes
    device: str = "auto"  # auto | cpu | cuda[:N]
    precision: str = "auto"  # auto (CUDA: bf16 if supported else fp16; CPU: fp32) | fp32 | bf16 | fp16
    compression: str = "none"  # none | lzf | gzip, applied once the store is complete
    seed: int = 0  # seed of the augmented views (>= 0)

    def validate(self) -> None:
        bad = [s for s in self.spatial_splits if s not in SPLITS]
        if bad:
            raise ConfigError(f"unknown split(s) {', '.join(bad)} for spatial maps; valid: {', '.join(SPLITS)}")
        if self.batch_size < 1 or self.train_views < 0 or self.workers < 0 or self.seed < 0:
            raise ConfigError("--batch-size must be >= 1 and --train-views, --workers, --seed >= 0")
        if self.compression not in COMPRESSIONS:
            raise ConfigError(f"unknown compression {self.compression!r}; valid: {', '.join(COMPRESSIONS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")


@torch.no_grad()
def extract_batch(model: torch.nn.Module, clf: Classifier, images: torch.Tensor, labels: torch.Tensor,
                  *, spatial: bool, device: torch.device, precision: str) -> dict[str, np.ndarray]:
    """The store's rows for one batch: pooled, logits, and (spatial) features and cams."""
    x = images.to(device, non_blocking=True)  # (B, in_channels, S, S)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, precision):
        fmap = model.forward_features(x)  # (B, C, H, W)
    fmap = fmap.float()
    pooled = model.forward_head(fmap, pre_logits=True)  # (B, C): the model's own global pooling
    rows = {"pooled": pooled, "logits": clf(pooled)}  # (B, C), (B, K) float32
    if spatial:
        features = fmap.to(torch.float16).contiguous()  # (B, C, H, W) in NCHW order
        cams = label_cams(features, clf.weight, labels.to(device))  # (B, H, W) from the stored maps
        rows |= {"features": features, "cams": cams.to(torch.float16)}
    if not all(bool(torch.isfinite(t).all()) for t in rows.values()):
        raise ArtifactError("the backbone gave NaN or infinite values (or maps beyond float16's "
                            "range, 65504); check the checkpoint, or extract with --precision fp32")
    return {name: t.detach().cpu().numpy() for name, t in rows.items()}


def _phase1_classifier(model: torch.nn.Module) -> Classifier:
    fc = model.fc
    scale = getattr(fc, "scale", None)
    return Classifier("cosine" if scale is not None else "linear", fc.weight, fc.bias, scale=scale)


@torch.no_grad()
def _map_shape(model, part: Part, device: torch.device, precision: str) -> tuple[int, int, int]:
    image, _ = part.dataset[0]
    with autocast(device, precision):
        fmap = model.forward_features(image[None].to(device))  # (1, C, H, W)
    return tuple(int(s) for s in fmap.shape[1:])


def _run_parts(partial: Path, parts: list[Part], progress: Progress, model, clf: Classifier,
               cfg: ExtractConfig, device: torch.device, precision: str) -> None:
    """Forward every remaining batch of every part; rows are written on a thread."""
    left = sum(p.rows - progress.done[p.name] for p in parts)
    with StoreWriter(partial) as writer, console.progress(left, "extract", unit="img") as tracker:
        background = BackgroundWriter(writer, progress)
        try:
            for part in parts:
                start = progress.done[part.name]
                if start >= part.rows:
                    continue
                background.wait_idle()  # no writer activity while workers fork
                loader = DataLoader(Subset(part.dataset, range(start, part.rows)), batch_size=cfg.batch_size,
                                    shuffle=False, num_workers=cfg.workers, pin_memory=device.type == "cuda")
                for images, labels in loader:
                    expected = part.columns["labels"][start:start + len(labels)]
                    if not np.array_equal(labels.numpy(), expected):
                        raise DataError(f"the {part.name} labels at rows {start}.. differ from the data "
                                        f"set's: the data changed during extraction; rerun with --force")
                    rows = extract_batch(model, clf, images, labels, spatial=part.spatial,
                                         device=device, precision=precision)
                    background.put(part.name, start, rows)
                    start += len(labels)
                    tracker.advance(len(labels), split=part.name)
                    testhooks.pause_at("extract-rows", lambda: background.wait_idle() or sum(progress.done.values()))
        except BaseException:
            with contextlib.suppress(BaseException):
                background.close()  # keep what was handed over; the error in flight wins
            raise
        background.close()


def _verify(partial: Path, parts: list[Part], progress: Progress, clf: Classifier) -> None:
    """Every row done, and the first and last row of each part are really there."""
    short = [p.name for p in parts if progress.done[p.name] != p.rows]
    if short:
        raise StoreError(f"{partial}: {', '.join(short)} not fully written; rerun to resume")
    with open_store(partial, allow_incomplete=True) as st, torch.no_grad():
        for part in (p for p in parts if p.rows):
            ends = [0, part.rows - 1]
            pooled = st.read(part.name, "pooled", ends)  # (2, C)
            logits = clf(torch.from_numpy(pooled)).numpy()  # (2, K)
            ok = np.allclose(st.read(part.name, "logits", ends), logits, rtol=1e-3, atol=1e-3)
            if part.spatial:
                mean = st.read(part.name, "features", ends).astype(np.float32).mean(axis=(2, 3))
                ok &= np.allclose(mean, pooled, atol=1e-2 * max(1.0, float(np.abs(pooled).max())), rtol=1e-2)
            if not ok:
                raise StoreError(f"{partial}: rows of /{part.name} were not written as recorded; "
                                 f"the partial is damaged: rerun with --force to start over")


def _finish(partial: Path, out: Path, compression: str) -> None:
    """Put the finished ``partial`` at ``out``: renamed, or compressed into ``out`` (through
    ``out.pack.partial``; on any failure the packed file is removed and the finished partial
    kept, so a rerun packs again)."""
    if compression == "none":
        commit_partial(partial, out)
        return
    packed = partial_path(out.with_name(out.name + ".pack"))
    try:
        pack_store(partial, packed, compression)
        commit_partial(packed, out)
    except BaseException:
        packed.unlink(missing_ok=True)
        raise
    partial.unlink()


def extract(checkpoint: str | Path, cfg: ExtractConfig, *, out: str | Path | None = None,
            force: bool = False) -> Path:
    """Extract the store of a backbone ``checkpoint`` (``-``: its path from stdin) to ``out``
    (default: ``<checkpoint stem>.h5`` beside it); return its path (resumes a partial). Under
    torchrun each rank extracts a batch-aligned shard store; rank 0 joins them into one store
    whose datasets equal a single-process run's."""
    cfg.validate()
    ckpt = resolve_input(checkpoint)
    out = Path(out).expanduser() if out else ckpt.with_suffix(".h5")
    check_not_input(out, [ckpt])  # before any work or log line
    if force:
        check_output(out, force, **OUTPUT)
    with distributed.session(cfg.device) as ctx:
        if not ctx.active:
            return _extract_to(cfg, ckpt, out, ctx.device, force=force)
        if not ctx.is_main:
            console.configure(quiet=True)
        check_output(out, force, inputs=[ckpt], **OUTPUT)
        shards = [out.with_name(f"{out.name}.shard{r}-of-{ctx.world_size}") for r in range(ctx.world_size)]
        _extract_to(cfg, ckpt, shards[ctx.rank], ctx.device, force=force, shard=(ctx.rank, ctx.world_size))
        ctx.barrier()
        if ctx.is_main:
            partial = partial_path(out)
            join_shards(shards, partial)
            _finish(partial, out, cfg.compression)
            for p in shards:
                p.unlink()
            console.log(f"store: {out} joined from {len(shards)} shards ({out.stat().st_size / 2**20:.1f} MiB)")
        ctx.barrier()
        return out


def _extract_to(cfg: ExtractConfig, ckpt: Path, out: Path, device: torch.device, *, force: bool,
                shard: tuple[int, int] | None = None) -> Path:
    """Extract into ``out`` (a whole store, or rank ``shard[0]``'s of ``shard[1]`` shards)."""
    precision = resolve_precision(cfg.precision, device)
    seed_everything(cfg.seed)

    # 1. backbone and data
    model, info = load_backbone(ckpt, device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    spec, splits = checkpoint_data(info, cfg.data, cfg.root)
    parts = make_parts(spec, splits, cfg.spatial_splits, cfg.train_views, cfg.seed)
    counts = np.bincount(parts[0].columns["labels"], minlength=len(info["class_names"]))  # (K,): all ranks'
    if shard is not None:
        parts = [p.shard(*shard, cfg.batch_size) for p in parts]
    clf = _phase1_classifier(model).to(device)

    # 2. the layout and what made it (the options fingerprint the partial for resume)
    c, h, w = _map_shape(model, parts[0], device, precision)
    spatial = [p.name for p in parts if p.spatial and p.name != VIEWS]
    _log_plan(parts, (c, h, w), spatial, precision, device)
    options = store_options(cfg, spec, file_sha256(ckpt), spatial, precision)

    def differs(path: Path) -> str | None:
        with open_store(path) as st:
            saved = st.attrs.get("options") or {}
        return other_options(option_diff(saved, options))

    if reuse_existing(out, force, differs):  # a rerun, or a shard finished before a crash
        console.log(f"{out} exists with the same options: reusing it (--force to extract again)")
        return out
    check_output(out, force, inputs=[ckpt], **OUTPUT)
    layout = StoreLayout(c, h, w, len(info["class_names"]), {p.name: p.rows for p in parts}, tuple(spatial))
    attrs = root_attrs(info, counts, ckpt, options, clf, (c, h, w), cfg.seed) | (
        {"shard": list(shard)} if shard is not None else {})
    head = {"kind": clf.kind, "weight": clf.weight.detach().cpu().numpy(), "scale": clf.scale,
            "bias": None if clf.bias is None else clf.bias.detach().cpu().numpy()}

    def create(path: Path) -> None:
        create_store(path, layout, attrs=attrs, classifier=head, columns={p.name: p.columns for p in parts})

    # 3. create or resume, 4. the pass, 5. verify, compress, rename
    def check(path: Path) -> None:
        check_output(path, force, inputs=[ckpt], **OUTPUT)

    with resumable(out, options, {p.name: p.rows for p in parts}, force, create, check) as (partial, progress):
        _run_parts(partial, parts, progress, model, clf, cfg, device, precision)
        _verify(partial, parts, progress, clf.cpu())
        with StoreWriter(partial) as writer:
            writer.mark_complete()
        _finish(partial, out, cfg.compression if shard is None else "none")  # shards are packed when joined
    console.log(f"store: {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return out


def _log_plan(parts: list[Part], fmap: tuple[int, int, int], spatial: list[str], precision: str,
              device: torch.device) -> None:
    c, h, w = fmap
    console.log(f"extract: {', '.join(f'{p.name} {p.rows}' for p in parts)} images; map {c}x{h}x{w}, "
                f"maps kept for {', '.join(spatial) or 'no split'}; {precision} on {device}")
    if h * w == 1:
        console.warn("the backbone's feature maps are 1x1 at this image size: FSA mixes locations "
                     "of a map and will refuse this store (the other methods work); use a CIFAR "
                     "ResNet (resnet32, resnet18-cifar) or train with a larger --image-size for FSA")
