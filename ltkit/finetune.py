"""Phase II from the cache: fine-tune or re-balance the classifier on stored pooled features.

Recipe: input (a confusing-class table, or a store: its table is built with the defaults) ->
Phase-I classifier -> feature bank on the device -> augmenter -> classifier to train ->
SGD loop -> classifier artifact. Sweeps stay cheap: build a bank once with `load_bank` and
call `finetune_classifier` per configuration, or `sweep_on_val` over a grid of options;
`val_accuracy` scores a classifier on the store's validation split (never on test).

The classifier methods (linear, crt, lws, tau-norm, ncm, ...) are registered classes in
`ltkit.methods` (`CLASSIFIERS`): each says how it is made, with which augmenters and which
defaults (`check_combination` refuses a pair that cannot work). Today's matrix:

| --augment \\ --classifier | linear | crt | lws | tau-norm | ncm |
| fsa, none, class-balanced, h2t, instance | yes | yes | yes | none only | none only |
| cloud (needs cosine)      | yes: cosine from the Phase-I directions | yes: cosine, re-initialised | no | no | no |

An augmenter with ``needs_cosine`` trains a cosine classifier with an additive angular
margin (ArcFace: the target logit is s * cos(min(theta + m, pi))). The stage's config,
`FinetuneConfig`, and its flat option names live in `ltkit.finetune_config`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ltkit import augment_auto, console, testhooks
from ltkit.artifacts import (
    check_output,
    earlier_artifact,
    make_lineage,
    option_diff,
    other_options,
    resolve_input,
    reuse_existing,
)
from ltkit.augment import AUTO_FIXED, check_augmenter, iter_batches, make_augmenter
from ltkit.augment.bank import FeatureBank, load_bank, resident_bank
from ltkit.classifiers import FORMAT as CLASSIFIER_FORMAT
from ltkit.classifiers import Classifier, load_classifier, save_classifier
from ltkit.confusing import table_for_store, table_store_path
from ltkit.confusing_table import ConfusingTable, load_table, save_table
from ltkit.device import resolve_device
from ltkit.errors import ArtifactError, ConfigError
from ltkit.finetune_config import RESOLVED_HEAD, FinetuneConfig, method_name
from ltkit.finetune_val import val_accuracy, val_features, val_metrics
from ltkit.heads import HEADS, accuracy_on, augmenter_class, check_inputs, final_base, map_bank, split_features
from ltkit.lineage import parent, parent_change, store_identity
from ltkit.methods import FitInputs, check_combination, get_method
from ltkit.runlog import RunLog, check_log, val_columns
from ltkit.runoptions import RUN_FIELDS, result_options

# the library API beside the stage: a bank once, then a fine-tune per configuration
__all__ = ["FinetuneConfig", "accuracy_on", "augment_finetune", "finetune_classifier", "fit", "load_bank",
           "split_features", "sweep_on_val", "val_accuracy"]
LOG_EVERY = 50  # iterations between progress lines (and device -> host syncs)


# ---- training --------------------------------------------------------------------------
def margin_logits(clf: Classifier, x: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """ArcFace logits: s * cos(theta), the target's angle widened to min(theta + m, pi)."""
    cos = F.normalize(x, dim=1) @ F.normalize(clf.weight, dim=1).T  # (B, K)
    theta = torch.arccos(cos.gather(1, labels[:, None]).clamp(-1 + 1e-7, 1 - 1e-7))  # (B, 1)
    target = torch.cos((theta + margin).clamp(max=math.pi))  # (B, 1)
    return clf.scale * cos.scatter(1, labels[:, None], target)  # (B, K)


@contextlib.contextmanager
def cpu_threads(device: torch.device, threads: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``threads`` on CPU (0: unchanged), restored after."""
    before = torch.get_num_threads()
    if device.type == "cpu" and threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def finetune_classifier(bank: FeatureBank, phase1: Classifier, cfg: FinetuneConfig, *,
                        val: tuple[torch.Tensor, torch.Tensor] | None = None, log: RunLog | None = None
                        ) -> tuple[Classifier, list[dict[str, Any]]]:
    """Train on the augmenter's batches; ``cfg`` resolved, no ``auto`` option left (the stage
    chooses those: `ltkit.augment_auto.choose`). Returns (classifier, history); each history
    row also goes to ``log`` (evaluated on ``val``, the validation split, only).

    Training-free methods (tau-norm, ncm) train nothing: `fit` makes them."""
    if not get_method(cfg.classifier).trains:
        raise ConfigError(f"the {cfg.classifier} classifier is not trained on batches; "
                          "make it with ltkit.finetune.fit (or ltkit augment-finetune)")
    with cpu_threads(bank.device, cfg.run.threads):
        return _train(bank, phase1, cfg, val, log)


def _train(bank: FeatureBank, phase1: Classifier, cfg: FinetuneConfig,
           val: tuple[torch.Tensor, torch.Tensor] | None,
           log: RunLog | None) -> tuple[Classifier, list[dict[str, Any]]]:
    device = bank.device
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    augmenter = make_augmenter(cfg.augment, bank, cfg.batches, cls=augmenter_class(cfg.head, cfg.augment))
    method = get_method(cfg.classifier)
    clf, params = method.initial(final_base(phase1, cfg), cfg, cosine=augmenter.needs_cosine, generator=generator)
    clf, params = HEADS.get(cfg.head).build(clf, params, bank, cfg)
    clf.to(device).train()
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=method.weight_decay(cfg))
    criterion = method.criterion(cfg, bank.class_counts)  # (logits, labels) -> loss; CE unless the method says
    is_tail = bank.tail_row >= 0  # (K,)
    stats = torch.zeros(5, device=device, dtype=torch.float64)  # loss sum, tail hits/n, head hits/n
    history: list[dict[str, Any]] = []
    logged, started = 0, time.perf_counter()  # iterations summed in `stats` so far: synced every LOG_EVERY
    with console.progress(cfg.iterations, f"{method_name(cfg)} fine-tuning") as bar, \
            contextlib.closing(iter_batches(augmenter, generator, cfg.iterations)) as batches:
        for it in range(1, cfg.iterations + 1):
            lr = cfg.lr if cfg.schedule == "constant" else \
                cfg.lr * 0.5 * (1 + math.cos(math.pi * (it - 1) / cfg.iterations))
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = next(batches)  # (B, C), (B,)
            logits = margin_logits(clf, x, y, cfg.margin) if augmenter.needs_cosine else clf(x)
            loss = criterion(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            method.project(clf)  # a projected-gradient constraint (wb's MaxNorm); nothing for most
            testhooks.pause_at("iteration", it)
            with torch.no_grad():  # running accuracy on the batch, before this step's update
                hit, tail = (logits.argmax(1) == y).double(), is_tail[y].double()  # (B,), (B,)
                stats += torch.stack([loss.detach().double(), (hit * tail).sum(), tail.sum(),
                                      (hit * (1 - tail)).sum(), (1 - tail).sum()])
            last = it == cfg.iterations
            evaluate = val is not None and (last or (cfg.run.eval_every and it % cfg.run.eval_every == 0))
            if it % LOG_EVERY and not last and not evaluate:
                continue
            s = stats.tolist()
            if not math.isfinite(s[0]):
                raise ArtifactError(f"the fine-tuning loss became {s[0]} by iteration {it}: the "
                                    "store's feature maps hold NaN or infinite values, or --lr is "
                                    "too high; re-extract the store, or lower --lr")
            row = {"iteration": it, "lr": lr, "loss": s[0] / (it - logged),
                   "train_acc": (s[1] + s[3]) / max(s[2] + s[4], 1.0),
                   "tail_acc": s[1] / max(s[2], 1.0), "head_acc": s[3] / max(s[4], 1.0)}
            if evaluate:  # the validation split only: the test split is measured by evaluate
                metrics = val_metrics(clf.eval(), val, bank.class_counts.cpu())
                row |= {"val_acc": metrics["balanced_acc"]} | val_columns(metrics)
                clf.train()
            row["seconds"], started = time.perf_counter() - started, time.perf_counter()
            history.append(row)
            if log is not None:
                log.write(row)
            stats.zero_()
            bar.advance(it - logged, loss=row["loss"], tail=row["tail_acc"], head=row["head_acc"])
            logged = it
    return clf.eval(), history


def sweep_on_val(bank: FeatureBank, phase1: Classifier, cfg: FinetuneConfig,
                 val: tuple[torch.Tensor, torch.Tensor], **grid: list) -> list[dict[str, Any]]:
    """Train one classifier per combination of ``grid`` (flat option names -> values to
    try, e.g. ``tau_s=[0.3, 0.5, 0.7], tau_g=[0.3, 0.5]``) on one bank; return each
    combination with its validation accuracy, best first. ``cfg`` must be resolved; its
    ``auto`` options outside ``grid`` take their fixed defaults (`AUTO_FIXED`)."""
    import itertools

    unknown = set(grid) - set(cfg.to_options()) - RUN_FIELDS
    if unknown:
        raise ConfigError(f"cannot sweep {', '.join(sorted(unknown))}: not a fine-tuning option")
    rows = []
    unchosen = {name: AUTO_FIXED[name] for name in cfg.batches.auto_fields() if name not in grid}
    for values in itertools.product(*grid.values()):  # a loop over configurations
        point = dict(zip(grid, values))
        trial = cfg.replace(**unchosen, **point)
        trial.validate()
        clf, _ = finetune_classifier(bank, phase1, trial)
        rows.append(point | {"val_acc": accuracy_on(clf, *val)})
    return sorted(rows, key=lambda row: -row["val_acc"])  # stable: ties keep grid order


# ---- the stage --------------------------------------------------------------------------
def resolve_sources(source: str | Path, cfg: FinetuneConfig, store: str | Path | None
                    ) -> tuple[Path, ConfusingTable | None, Path | None, bool]:
    """(store path, table or None, table path or None, whether that table is still to be
    written) of a stage input: a table, or a store whose default table is reused, or built
    (in memory: the stage writes it once nothing can be refused any more). The
    training-free methods need no table."""
    from ltkit.store import is_store

    src = resolve_input(source)
    if is_store(src):
        if store is not None:
            raise ConfigError("--store names a table's store; the input is already a store")
        if not get_method(cfg.classifier).trains:
            return src, None, None, False
        table, table_path, pending = table_for_store(src, write=False)
        return src, table, table_path, pending
    table = load_table(src)
    return (Path(store) if store else table_store_path(table)), table, src, False


def fit(st, table: ConfusingTable | None, phase1: Classifier, cfg: FinetuneConfig,
        device: torch.device, val, log_to: Path | None = None
        ) -> tuple[Classifier, list[dict[str, Any]], FinetuneConfig, list[dict[str, Any]]]:
    """(classifier, history, ``cfg`` with what was chosen filled in, the ``auto`` augmenter
    settings tried on validation) of a resolved ``cfg``; a trained one's history goes to ``log_to`` too."""
    method = get_method(cfg.classifier)
    if not method.trains:
        return (*method.make(FitInputs(st, phase1, cfg, device, val)), [])
    augmenter = augmenter_class(cfg.head, cfg.augment)
    check_augmenter(augmenter, cfg.batches)  # fail before loading any data
    maps = HEADS.get(cfg.head).array == "features"
    bank = resident_bank(st, table, device=device, spatial=augmenter.needs_spatial or maps,
                         use_views=cfg.batches.use_views, resident_bytes=cfg.run.resident_gib * 2**30,
                         scratch_dir=cfg.run.scratch_dir, split=cfg.train_on)
    if maps:
        bank = map_bank(bank, st.shape(cfg.train_on, "features")[2:])
    cfg, tried = augment_auto.choose(bank, phase1, cfg, val, augment_auto.data_key(st.path, table))
    console.log(f"{method_name(cfg)}: {cfg.iterations} iterations of {cfg.batches.batch_size} on "
                f"{device}, lr {cfg.lr} ({cfg.schedule}), {bank.num_views} view(s) per image")
    log = log_to and RunLog(log_to, "iteration", extra=("tail_acc", "head_acc"), tensorboard=cfg.run.tensorboard)
    with log or contextlib.nullcontext():
        clf, history = finetune_classifier(bank, phase1, cfg, val=val, log=log)
    return clf, history, cfg, tried


def _request_differs(path: Path, request: dict[str, Any], parents: dict[str, Path],
                     schedule: Callable[[dict[str, Any]], str | None]) -> str | None:
    """How the classifier at ``path`` differs from one made from these very parents with
    these options (and, by ``schedule``, the same resolved schedule); None when it does not.
    Options of an artifact of before (device and the like among them) are compared without those."""
    _, meta = load_classifier(path)
    saved = meta["lineage"].get("parents", {})
    if set(saved) != set(parents):
        return (f"was made from a {' and a '.join(sorted(saved))}, not a "
                f"{' and a '.join(sorted(parents))}")
    for role, p in parents.items():
        if parent_change(parent(meta["lineage"], role, owner=path), p):
            return f"was made from another version of its {role} {p} (the hash differs)"
    asked = {k: v for k, v in request.items() if k not in RESOLVED_HEAD}  # compared resolved, below
    saved_request = {k: v for k, v in result_options(meta["options"].get("request") or {}).items()
                     if k not in RESOLVED_HEAD}
    return other_options(option_diff(saved_request, asked)) or schedule(meta["options"])


def augment_finetune(source: str | Path, cfg: FinetuneConfig, *, out: str | Path | None = None,
                     force: bool = False, store: str | Path | None = None) -> Path:
    """``ltkit augment-finetune``: a table or a store (``-``: its path from stdin) -> the path of
    the classifier artifact written (default: beside the table, named after the method).
    ``store``: the table's store, when it moved or changed. Everything that can be refused is
    refused before anything is written (a store's default table included)."""
    from ltkit.store import open_store

    cfg.validate()
    store_path, table, table_path, pending = resolve_sources(source, cfg, store)
    out = Path(out or (table_path or store_path).parent / f"{store_path.stem}.{method_name(cfg)}.pt")
    parents = {"store": store_path} | ({"table": table_path} if table_path else {})
    request = cfg.to_options()
    with open_store(store_path) as st:
        sized = (st.rows("train"), table.top if table is not None else 3)
    if reuse_existing(out, force, lambda p: _request_differs(p, request, parents,
                                                             lambda saved: cfg.schedule_change(saved, *sized))):
        console.log(f"{out} exists with the same options: reusing it (--force to fine-tune again)")
        return out.expanduser()
    inputs = [src for src in (store_path, table_path) if src]
    out = check_output(out, force, inputs=inputs, replaces=earlier_artifact(CLASSIFIER_FORMAT), kind="classifier")
    log_to = check_log(out, inputs) if get_method(cfg.classifier).trains else None
    device = resolve_device(cfg.run.device)
    with open_store(store_path) as st:
        if table is not None:
            table.check_store(st)
        phase1 = Classifier.from_store(st)
        check_combination(cfg.augment_name(), cfg.classifier, phase1.kind)
        check_inputs(st, cfg, phase1)
        val = val_features(st, device, HEADS.get(cfg.head).array, cfg.val_part) if "val" in st.splits else None
        if val is None and cfg.run.eval_every:
            console.warn(f"--eval-every {cfg.run.eval_every}: {store_path} has no validation split, so "
                         "there is nothing to measure along the way (extract with validation images)")
        cfg = cfg.resolved(st.rows("train"), table.top if table is not None else 3)
        clf, history, cfg, tried = fit(st, table, phase1, cfg, device, val, log_to)
        identity = store_identity(st)
        summary = {} if val is None else {"val_acc": accuracy_on(clf, *val),
                                          "phase1_val_acc": val_accuracy(st, phase1, device, cfg.val_part)}
    if pending:  # nothing was refused: now the store's default table goes beside it
        save_table(table, table_path)
    if val is not None:
        console.log(f"validation accuracy {summary['val_acc']:.4f} "
                    f"(Phase I {summary['phase1_val_acc']:.4f})")
    options = cfg.to_options() | {"run": dataclasses.asdict(cfg.run), "method": method_name(cfg),
                                  "phase1_kind": phase1.kind, "request": request} | \
        ({"auto_choice": tried} if tried else {})
    lineage = make_lineage(parents, options, cfg.seed) | {"store_identity": identity}
    return save_classifier(out, clf.cpu(), method=method_name(cfg), lineage=lineage,
                           options=options | summary, history=history)
