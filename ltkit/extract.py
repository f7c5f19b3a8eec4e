"""`extract`: run a trained backbone once over its data and cache what it sees in a store.

The recipe: checkpoint -> data (the checkpoint's long-tailed spec, evaluation transforms)
-> map shape -> store layout -> create or resume ``OUT.partial`` -> one pass per part
(train, val, test, augmented train views) -> verify -> compress (optional) -> rename.

Crash safety (see docs/store.md): the partial is created with every dataset allocated, so
the pass only fills raw rows; after each batch the file is flushed and the rows done are
recorded in ``OUT.partial.json``, written atomically. Rows are processed in fixed batches
from row 0, so a resumed run sees exactly the batches an uninterrupted one would, and
augmented views are seeded per (seed, view, image): the resumed store is identical.
Writing runs on a thread so the disk overlaps the next batch's forward pass.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ltkit import __version__, console
from ltkit.artifacts import (check_not_input, check_output, reuse_existing, commit_partial, file_sha256, make_lineage,
                             option_diff, other_options, partial_path, resolve_input,
                             write_failure)
from ltkit import distributed
from ltkit.cams import label_cams
from ltkit.checkpoint import load_backbone
from ltkit.classifiers import Classifier
from ltkit.data import build_splits, spec_from_dict
from ltkit.device import seed_everything
from ltkit.errors import ArtifactError, ConfigError, DataError, LtkitError, StoreError
from ltkit.store import (COMPRESSIONS, SPLITS, VIEWS, StoreLayout, StoreWriter, create_store,
                         open_store, pack_store)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class ExtractConfig:
    checkpoint: str  # backbone checkpoint path, or "-" to read the path from stdin
    out: str | None = None  # store path; None: <checkpoint stem>.h5 beside the checkpoint
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


def view_seed(seed: int, view: int, index: int) -> int:
    """The RNG seed of view `view` of training image `index`: independent of batching."""
    return int(np.random.SeedSequence([seed, view, index]).generate_state(1)[0])


class SeededViews(Dataset):
    """Row ``v * N + i``: view v of training image i, augmented under `view_seed(seed, v, i)`."""

    def __init__(self, dataset: Dataset, views: int, seed: int):
        self.dataset, self.views, self.seed, self.n = dataset, views, seed, len(dataset)

    def __len__(self) -> int:
        return self.views * self.n

    def __getitem__(self, row: int) -> tuple[torch.Tensor, int]:
        view, index = divmod(row, self.n)
        with torch.random.fork_rng(devices=[]):  # leave the caller's RNG as it was
            torch.manual_seed(view_seed(self.seed, view, index))
            return self.dataset[index]


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 needs a CUDA device; use fp32 or bf16 on the CPU")
    return precision


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
    pooled = fmap.mean(dim=(2, 3))  # (B, C): the model's own global average pooling
    rows = {"pooled": pooled, "logits": clf(pooled)}  # (B, C), (B, K) float32
    if spatial:
        features = fmap.to(torch.float16).contiguous()  # (B, C, H, W) in NCHW order
        cams = label_cams(features, clf.weight, labels.to(device))  # (B, H, W) from the stored maps
        rows |= {"features": features, "cams": cams.to(torch.float16)}
    if not all(bool(torch.isfinite(t).all()) for t in rows.values()):
        raise ArtifactError("the backbone gave NaN or infinite values (or maps beyond float16's "
                            "range, 65504); check the checkpoint, or extract with --precision fp32")
    return {name: t.detach().cpu().numpy() for name, t in rows.items()}


class _Progress:
    """Rows done per part, in ``OUT.partial.json``, rewritten atomically after every flush."""

    def __init__(self, path: Path, options: dict[str, Any], done: dict[str, int]):
        self.path, self.options, self.done = path, options, done

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps({"options": self.options, "done": self.done}, sort_keys=True))
            os.replace(tmp, self.path)
        except OSError as exc:  # the record before this one still holds: the rows it names are in
            tmp.unlink(missing_ok=True)
            reason = write_failure(exc)
            if reason is None:
                raise
            raise StoreError(f"could not write {self.path}: {reason}; free space, then rerun the "
                             f"same command to resume from the rows already written") from None

    @staticmethod
    def load(path: Path) -> dict[str, Any] | None:
        try:
            record = json.loads(path.read_text())
            return record if isinstance(record, dict) and {"options", "done"} <= set(record) else None
        except (OSError, ValueError):
            return None


class _BackgroundWriter:
    """Writes batches on a thread (the disk overlaps the next forward pass); after each
    batch: flush, then record the rows done. `close` drains what was handed over."""

    def __init__(self, writer: StoreWriter, progress: _Progress, depth: int = 2):
        self.writer, self.progress = writer, progress
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            try:
                if self.error is None:
                    part, start, rows = item
                    self.writer.write(part, start, **rows)
                    self.writer.flush()  # the rows are in the file before the record says so
                    self.progress.done[part] = start + len(rows["pooled"])
                    self.progress.save()
            except BaseException as exc:  # reported to the main thread on its next call
                self.error = exc
            finally:
                self.queue.task_done()

    def put(self, part: str, start: int, rows: dict[str, np.ndarray]) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((part, start, rows))

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def wait_idle(self) -> None:
        """Block until every handed-over batch is written (the thread then holds no lock,
        so DataLoader workers can be forked safely)."""
        self.queue.join()


COMPUTED = ("pooled", "logits", "features", "cams")  # what the backbone gives, per row


@dataclass
class _Part:
    """One pass of the extraction: a split (or the augmented views) and what it writes."""

    name: str  # "train", "val", "test" or VIEWS
    dataset: Dataset  # items (image (C, S, S) float32, label)
    columns: dict[str, np.ndarray]  # per-row arrays known up front: labels, source indices
    spatial: bool  # keep feature maps and CAMs

    @property
    def rows(self) -> int:
        return len(self.columns["labels"])

    def shard(self, rank: int, world: int, batch: int) -> "_Part":
        """Rank ``rank``'s contiguous slice, cut on batch boundaries so that every batch holds
        the same images as in a single-process run (and so gives the same numbers)."""
        batches = -(-self.rows // batch)
        lo = min(rank * batches // world * batch, self.rows)
        hi = min((rank + 1) * batches // world * batch, self.rows)
        return _Part(self.name, Subset(self.dataset, range(lo, hi)),
                     {k: v[lo:hi] for k, v in self.columns.items()}, self.spatial)


def _data_parts(cfg: ExtractConfig, info: dict[str, Any]):
    """The data set spec, the parts to extract and the training counts."""
    spec = spec_from_dict(dict(info["dataset"]))
    if cfg.data is not None:
        spec = dataclasses.replace(spec, name=cfg.data)
    if cfg.root is not None:
        spec = dataclasses.replace(spec, root=cfg.root)
    splits = build_splits(spec, train_augment=False)
    if list(splits.class_names) != list(info["class_names"]):
        raise DataError(f"the data set's classes ({', '.join(splits.class_names[:5])}, ...) are not "
                        f"the {info['num_classes']} classes the backbone was trained on; extract with "
                        f"its own data set (drop --data/--root) or a copy of it")
    if splits.in_channels != int(info["in_channels"]):
        raise DataError(f"the data set's images have {splits.in_channels} channel(s) but the backbone "
                        f"takes {info['in_channels']}; extract with its own data set (drop --data/--root)")
    if list(splits.train_counts) != list(info["class_counts"]):
        console.warn(f"the training counts {list(splits.train_counts)} differ from the backbone's "
                     f"{list(info['class_counts'])}: this is not the subset it was trained on")

    def index(values, n):
        return np.arange(n, dtype=np.int64) if values is None else np.asarray(values, np.int64)

    spatial = set(cfg.spatial_splits)
    n = len(splits.train_labels)
    parts = [_Part("train", splits.train, {"labels": np.asarray(splits.train_labels, np.int64),
                                           "source_index": index(splits.kept_indices, n)}, "train" in spatial)]
    if splits.val is not None:
        parts.append(_Part("val", splits.val, {"labels": np.asarray(splits.val_labels, np.int64),
                                               "source_index": index(splits.val_indices, len(splits.val_labels))},
                           "val" in spatial))
    if splits.bound is not None:  # balanced held-out images for the classification bound
        parts.append(_Part("bound", splits.bound, {"labels": np.asarray(splits.bound_labels, np.int64),
                                                   "source_index": np.asarray(splits.bound_indices, np.int64)},
                           "bound" in spatial))
    parts.append(_Part("test", splits.test, {"labels": np.asarray(splits.test_labels, np.int64),
                                             "source_index": index(None, len(splits.test_labels))}, "test" in spatial))
    if cfg.train_views:
        augmented = build_splits(spec, train_augment=True).train
        v = cfg.train_views
        parts.append(_Part(VIEWS, SeededViews(augmented, v, cfg.seed),
                           {"labels": np.tile(parts[0].columns["labels"], v),
                            "sample": np.tile(np.arange(n, dtype=np.int64), v),
                            "view": np.repeat(np.arange(v, dtype=np.int64), n)}, "train" in spatial))
    for part in parts:
        if len(part.dataset) != part.rows:
            raise DataError(f"the {part.name} split has {len(part.dataset)} images but {part.rows} labels")
    return spec, parts, [int(c) for c in splits.train_counts]


def _earlier_store(path: Path) -> bool:
    """True when ``path`` is an ltkit feature store (complete or not), which --force may replace."""
    try:
        with open_store(path, allow_incomplete=True):
            return True
    except LtkitError:
        return False


def _phase1_classifier(model: torch.nn.Module) -> Classifier:
    fc = model.fc
    scale = getattr(fc, "scale", None)
    return Classifier("cosine" if scale is not None else "linear", fc.weight, fc.bias, scale=scale)


@torch.no_grad()
def _map_shape(model, dataset: Dataset, device: torch.device, precision: str) -> tuple[int, int, int]:
    image, _ = dataset[0]
    with autocast(device, precision):
        fmap = model.forward_features(image[None].to(device))  # (1, C, H, W)
    return tuple(int(s) for s in fmap.shape[1:])


def _open_or_create(partial: Path, record_path: Path, options: dict[str, Any], parts: list[_Part],
                    force: bool, create) -> _Progress:
    """Resume a partial made with the same options, or start one; never mix two runs."""
    record = _Progress.load(record_path) if partial.exists() else None
    if partial.exists() and record is None:
        console.warn(f"{partial} has no progress record (stopped while being created); starting it over")
    elif record is not None and record["options"] != options:
        diff = option_diff(record["options"], options)
        if not force:
            raise ArtifactError(f"{partial} is an interrupted extraction with other options "
                                f"({', '.join(diff)}); rerun with the same options to resume it, "
                                f"or pass --force to start over")
        console.warn(f"--force: starting over; {partial} was made with other options ({', '.join(diff)})")
    elif record is not None:
        try:
            with open_store(partial, allow_incomplete=True) as st:
                if any(st.rows(p.name) != p.rows for p in parts):
                    raise StoreError("its rows do not match the data set")
            done = {p.name: min(int(record["done"].get(p.name, 0)), p.rows) for p in parts}
            console.log(f"resuming {partial}: {sum(done.values())} of "
                        f"{sum(p.rows for p in parts)} rows already written")
            return _Progress(record_path, options, done)
        except StoreError as exc:
            console.warn(f"{partial} cannot be resumed ({exc}); starting it over")
    partial.unlink(missing_ok=True)
    record_path.unlink(missing_ok=True)
    try:
        create(partial)
        progress = _Progress(record_path, options, {p.name: 0 for p in parts})
        progress.save()  # its existence says the partial was created completely
    except BaseException:  # nothing written yet worth keeping: give the space back
        partial.unlink(missing_ok=True)
        record_path.unlink(missing_ok=True)
        raise
    return progress


def _pack(partial: Path, out: Path, compression: str) -> None:
    """Compress the finished ``partial`` into ``out`` (through ``out.pack.partial``); on any
    failure the packed file is removed and the finished partial kept, so a rerun packs again."""
    packed = partial_path(out.with_name(out.name + ".pack"))
    try:
        pack_store(partial, packed, compression)
        commit_partial(packed, out)
    except BaseException:
        packed.unlink(missing_ok=True)
        raise
    partial.unlink()


def _verify(partial: Path, parts: list[_Part], progress: _Progress, clf: Classifier) -> None:
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


def _run_parts(partial: Path, parts: list[_Part], progress: _Progress, model, clf: Classifier,
               cfg: ExtractConfig, device: torch.device, precision: str) -> None:
    """Forward every remaining batch of every part; rows are written on a thread."""
    left = sum(p.rows - progress.done[p.name] for p in parts)
    with StoreWriter(partial) as writer, console.progress(left, "extract", unit="img") as tracker:
        background = _BackgroundWriter(writer, progress)
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
        except BaseException:
            with contextlib.suppress(BaseException):
                background.close()  # keep what was handed over; the error in flight wins
            raise
        background.close()


@contextlib.contextmanager
def _exclusive(lock: Path, out: Path):
    """Hold an exclusive lock on `lock` while extracting `out`: a second extract of the same
    output fails at once instead of writing the same partial."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): nothing to hold
        yield
        return
    with open(lock, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArtifactError(f"another ltkit extract is writing {out}; wait for it to finish "
                                f"or stop it first") from None
        except OSError:  # a file system without locks: go on unlocked
            pass
        yield


def extract(cfg: ExtractConfig, *, force: bool = False) -> Path:
    """Extract the store of a backbone checkpoint; return its path (resumes a partial).

    Under torchrun each process extracts a contiguous shard of every split into its own shard
    store (resumable like any partial); rank 0 then joins the shards into one store whose
    datasets equal a single-process run's.
    """
    cfg.validate()
    ckpt = resolve_input(cfg.checkpoint)
    out = Path(cfg.out).expanduser() if cfg.out else ckpt.with_suffix(".h5")
    check_not_input(out, [ckpt])  # before any work or log line
    if force:
        check_output(out, force, replaces=_earlier_store, kind="feature store")
    with distributed.session(cfg.device) as ctx:
        if not ctx.active:
            return _extract_to(cfg, ckpt, out, ctx.device, force=force)
        if not ctx.is_main:
            console.configure(quiet=True)
        check_output(out, force, inputs=[ckpt], replaces=_earlier_store, kind="feature store")
        shards = [out.with_name(f"{out.name}.shard{r}-of-{ctx.world_size}")
                  for r in range(ctx.world_size)]
        _extract_to(cfg, ckpt, shards[ctx.rank], ctx.device, force=force,
                    shard=(ctx.rank, ctx.world_size))
        ctx.barrier()
        if ctx.is_main:
            _join_shards(shards, out, cfg.compression)
        ctx.barrier()
        return out


def _join_shards(shards: list[Path], out: Path, compression: str) -> None:
    """One store from the ranks' shard stores (concatenated in rank order), then remove them."""
    stores = [open_store(p) for p in shards]
    try:
        first = stores[0]
        attrs = {k: v for k, v in first.attrs.items()
                 if k not in ("schema", "schema_version", "complete", "shard")}
        c, h, w = attrs["feature_shape"]
        splits = [s for s in first.splits] + ([VIEWS] if first.views else [])
        rows = {s: sum(st.rows(s) for st in stores) for s in splits}
        columns = {s: {name: np.concatenate([st.read(s, name) for st in stores])
                       for name in first.names(s) if name not in COMPUTED} for s in splits}
        layout = StoreLayout(c, h, w, attrs["num_classes"], rows, tuple(attrs["spatial_splits"]))
        partial = partial_path(out)
        partial.unlink(missing_ok=True)
        create_store(partial, layout, attrs=attrs, classifier=first.classifier(), columns=columns)
        with StoreWriter(partial) as writer:
            for split in splits:
                offset = 0
                for st in stores:
                    for name in (n for n in st.names(split) if n in COMPUTED):
                        for start, block in st.iter_chunks(split, name):
                            writer.write(split, offset + start, **{name: block})
                    offset += st.rows(split)
            writer.mark_complete()
    finally:
        for st in stores:
            st.close()
    if compression != "none":
        _pack(partial, out, compression)
    else:
        commit_partial(partial, out)
    for p in shards:
        p.unlink()
    console.log(f"store: {out} joined from {len(shards)} shards ({out.stat().st_size / 2**20:.1f} MiB)")


def _extract_to(cfg: ExtractConfig, ckpt: Path, out: Path, device: torch.device, *, force: bool,
                shard: tuple[int, int] | None = None) -> Path:
    """Extract into ``out`` (a whole store, or rank ``shard[0]``'s of ``shard[1]`` shards)."""
    partial, record_path = partial_path(out), out.with_name(out.name + ".partial.json")
    precision = resolve_precision(cfg.precision, device)
    seed_everything(cfg.seed)

    # 1. backbone and data
    model, info = load_backbone(ckpt, device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    spec, parts, train_counts = _data_parts(cfg, info)
    if shard is not None:
        parts = [p.shard(*shard, cfg.batch_size) for p in parts]
    clf = _phase1_classifier(model).to(device)
    c, h, w = _map_shape(model, parts[0].dataset, device, precision)
    spatial = [p.name for p in parts if p.spatial and p.name != VIEWS]
    console.log(f"extract: {', '.join(f'{p.name} {p.rows}' for p in parts)} images; map {c}x{h}x{w}, "
                f"maps kept for {', '.join(spatial) or 'no split'}; {precision} on {device}")
    if h * w == 1:
        console.warn(f"the backbone's feature maps are 1x1 at this image size: FSA mixes locations "
                     f"of a map and will refuse this store (the other methods work); use a CIFAR "
                     f"ResNet (resnet32, resnet18-cifar) or train with a larger --image-size for FSA")

    # 2. the layout and what made it (the options fingerprint the partial for resume)
    sha = file_sha256(ckpt)
    options = json.loads(json.dumps({
        "checkpoint_sha256": sha, "dataset": dataclasses.asdict(spec), "spatial_splits": spatial,
        "train_views": cfg.train_views, "batch_size": cfg.batch_size, "precision": precision,
        "compression": cfg.compression, "seed": cfg.seed, "ltkit_version": __version__}))
    def differs(path: Path) -> str | None:
        with open_store(path) as st:
            saved = st.attrs.get("options") or {}
        return other_options(option_diff(saved, options))

    if reuse_existing(out, force, differs):  # a rerun, or a shard finished before a crash
        console.log(f"{out} exists with the same options: reusing it (--force to extract again)")
        return out
    check_output(out, force, inputs=[ckpt], replaces=_earlier_store, kind="feature store")
    layout = StoreLayout(c, h, w, len(info["class_names"]), {p.name: p.rows for p in parts}, tuple(spatial))
    attrs = {"class_names": list(info["class_names"]), "train_counts": train_counts,
             "num_classes": len(info["class_names"]), "feature_shape": [c, h, w], "arch": info["arch"],
             "layer": "forward_features", "head": clf.kind, "dataset": options["dataset"],
             "backbone_path": str(ckpt.resolve()), "backbone_sha256": sha, "ltkit_version": __version__,
             "options": options, "seed": cfg.seed, "lineage": make_lineage({"backbone": ckpt}, options, cfg.seed),
             "train_views": cfg.train_views, "spatial_splits": spatial}
    if shard is not None:
        attrs["shard"] = list(shard)
    head = {"kind": clf.kind, "weight": clf.weight.detach().cpu().numpy(), "scale": clf.scale,
            "bias": None if clf.bias is None else clf.bias.detach().cpu().numpy()}

    def create(path: Path) -> None:
        create_store(path, layout, attrs=attrs, classifier=head,
                     columns={p.name: p.columns for p in parts})

    # 3. create or resume, 4. the pass, 5. verify, compress, rename
    lock = out.with_name(out.name + ".partial.lock")
    with _exclusive(lock, out):
        # again, under the lock: another run may have just finished it
        check_output(out, force, inputs=[ckpt], replaces=_earlier_store, kind="feature store")
        progress = _open_or_create(partial, record_path, options, parts, force, create)
        _run_parts(partial, parts, progress, model, clf, cfg, device, precision)
        _verify(partial, parts, progress, clf.cpu())
        with StoreWriter(partial) as writer:
            writer.mark_complete()
        if cfg.compression != "none" and shard is None:  # shards are packed when joined
            _pack(partial, out, cfg.compression)
        else:
            commit_partial(partial, out)
        record_path.unlink(missing_ok=True)
    lock.unlink(missing_ok=True)
    console.log(f"store: {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return out
