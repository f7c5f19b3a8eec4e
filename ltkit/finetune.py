"""Phase II from the cache: fine-tune or re-balance the classifier on stored pooled features.

Recipe: input (a confusing-class table, or a store: its table is built with the defaults) ->
Phase-I classifier -> feature bank on the device -> augmenter -> classifier to train ->
SGD loop -> classifier artifact. Sweeps stay cheap: build a bank once with `load_bank` and
call `finetune_classifier` per configuration, or `sweep_on_val` over a grid of options;
`val_accuracy` scores a classifier on the store's validation split (never on test).

Augmenter x classifier (`check_combination`):

| --augment \\ --classifier | linear | crt | lws | tau-norm | ncm |
| fsa, none, class-balanced | yes    | yes | yes | none only | none only |
| cloud (needs cosine)      | yes: cosine from the Phase-I directions | yes: cosine, re-initialised | no | no | no |

- ``linear``: the Phase-I classifier itself, fine-tuned (paper: SGD, lr 0.001 fixed, 6400
  iterations, batch 128; momentum 0.9 and weight decay 5e-4 are our choice, the paper is
  silent). A cosine Phase-I head stays cosine.
- ``crt``: a re-initialised linear layer (nn.Linear's init) trained on the batches; Kang's
  schedule by default: batch 512, lr 0.2 with cosine decay to 0, 10 epochs-equivalent
  (ceil(10 * N / batch) iterations). With ``--augment auto`` its batches are class-balanced.
- ``lws``: the Phase-I weights frozen, one scale per class learned (Kang's schedule).
- ``tau-norm``: W / ||W||^tau, no training, bias dropped; ``tau=None`` picks tau in 0..2
  (step 0.1, ties to the smallest) by validation accuracy.
- ``ncm``: class means of the training features (of all drawn views): cosine (means of
  L2-normalised features) or squared L2.
Training-free classifiers take ``--augment none`` only (no batches, nothing to augment); an
augmenter with ``needs_cosine`` trains a cosine classifier with an additive angular margin
(ArcFace: the target logit is s * cos(min(theta + m, pi))).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ltkit import console
from ltkit.artifacts import (check_output, earlier_artifact, file_sha256, make_lineage, option_diff, other_options,
                             resolve_input, reuse_existing)
from ltkit.augment import (AUGMENTERS, AugmentConfig, check_augmenter, iter_batches,
                           make_augmenter, nearest_balanced_batch)
from ltkit.augment.bank import VIEWS_SPLIT, FeatureBank, load_bank
from ltkit.classifiers import FORMAT as CLASSIFIER_FORMAT
from ltkit.classifiers import (NCM_METRICS, TAU_GRID, Classifier, load_classifier, pick_tau,
                               save_classifier)
from ltkit.confusing import load_table, table_for_store, table_store_path
from ltkit.device import resolve_device
from ltkit.errors import ArtifactError, ConfigError
from ltkit.metrics import balanced_accuracy, per_class_accuracy
from ltkit.augment import DRAW, TAU_G, TAU_S

CLASSIFIERS = ("linear", "crt", "lws", "tau-norm", "ncm")
TRAINING_FREE = ("tau-norm", "ncm")
SCHEDULES = ("constant", "cosine")
PAPER = {"iterations": 6400, "lr": 0.001, "batch_size": 128, "schedule": "constant"}
KANG = {"epochs": 10, "lr": 0.2, "batch_size": 512, "schedule": "cosine"}
LOG_EVERY = 50  # iterations between progress lines (and device -> host syncs)
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


@dataclass
class FinetuneConfig:
    augment: str = "auto"          # augmenter; auto: fsa (linear), class-balanced (crt/lws), none (else)
    classifier: str = "linear"     # linear | crt | lws | tau-norm | ncm
    iterations: int | None = None  # SGD steps; None: 6400 (linear) or 10 epochs-equivalent (crt, lws)
    lr: float | None = None        # None: 0.001 fixed (linear, paper) or 0.2 (crt, lws, Kang)
    schedule: str | None = None    # constant | cosine (to 0); None: constant (linear), cosine (crt, lws)
    momentum: float = 0.9          # SGD momentum (the paper gives none; 0.9 as in Phase I)
    weight_decay: float = 5e-4     # SGD weight decay on the trained parameters
    batch_size: int | None = None  # None: 128 (linear, paper) or 512 (crt, lws, Kang)
    na: int | None = None          # Na augmented per real tail sample; None: the table's Nf
    tau_s: float = TAU_S            # FSA class-specific threshold (CAM > tau_s), in (0, 1)
    tau_g: float = TAU_G            # FSA class-generic threshold (CAM < tau_g), in (0, 1)
    gamma_min: float = 0.0         # FSA: gamma ~ U(gamma_min, 1) (paper: 0), in [0, 1)
    tail_draw: str = DRAW          # class (a tail class, then an image) | instance (uniform over tail images)
    head_draw: str = DRAW          # class | instance, for the head half
    views: bool = True             # use the store's augmented train views when it has them
    margin: float = 0.2            # cloud: additive angular margin m, radians, in [0, pi/2)
    scale: float = 16.0            # cosine logit scale s (a cosine Phase-I head keeps its own)
    tau: float | None = None       # tau-norm exponent; None: chosen on the validation split
    ncm_metric: str = "cosine"     # ncm: cosine | l2
    eval_every: int = 0            # validation accuracy every N iterations (0: only at the end)
    resident_gib: float = 4.0      # spatial maps up to this size live on the device, else streamed
    scratch_dir: str | None = None  # streamed maps: folder of their mapped scratch copy (None: the store's)
    threads: int = 1               # CPU intra-op threads while training (0: torch's default); batches
                                   # are small, and extra threads mostly wait on each other
    seed: int = 0                  # one seed for every draw and initialisation
    device: str = "auto"           # auto | cpu | cuda[:N]

    def validate(self) -> None:
        if self.classifier not in CLASSIFIERS:
            raise ConfigError(f"unknown classifier {self.classifier!r}; valid: {', '.join(CLASSIFIERS)}")
        if self.augment != "auto":
            AUGMENTERS.get(self.augment)
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if self.ncm_metric not in NCM_METRICS:
            raise ConfigError(f"unknown --ncm-metric {self.ncm_metric!r}; valid: {', '.join(NCM_METRICS)}")
        for name in ("iterations", "batch_size", "na"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError("--lr must be positive")
        if min(self.momentum, self.weight_decay, self.eval_every, self.threads) < 0:
            raise ConfigError("--momentum, --weight-decay, --eval-every and --threads must be >= 0")
        if not 0 <= self.margin < math.pi / 2 or self.scale <= 0:
            raise ConfigError("--margin must lie in [0, pi/2) and --scale be positive")
        if self.tau is not None and self.tau < 0:
            raise ConfigError("--tau must be >= 0 (or auto)")
        self.augment_config().validate()

    def augment_name(self) -> str:
        if self.augment != "auto":
            return self.augment
        return {"linear": "fsa", "crt": "class-balanced", "lws": "class-balanced"}.get(self.classifier, "none")

    def augment_config(self) -> AugmentConfig:
        return AugmentConfig(batch_size=self.batch_size or 128, na=self.na or 3, tau_s=self.tau_s,
                             tau_g=self.tau_g, gamma_min=self.gamma_min, tail_draw=self.tail_draw, head_draw=self.head_draw,
                             use_views=self.views)

    def resolved(self, num_train: int, nf: int) -> "FinetuneConfig":
        """Every None filled in: the paper's schedule for linear, Kang's for crt and lws."""
        kang = self.classifier in ("crt", "lws")
        base = KANG if kang else PAPER
        batch, na = self.batch_size or base["batch_size"], self.na or nf
        augmenter = AUGMENTERS.get(self.augment_name())
        if (self.batch_size is None and self.classifier not in TRAINING_FREE
                and augmenter.balanced_batches):  # a default that fits Na
            fitted = nearest_balanced_batch(batch, na)
            if fitted != batch:
                console.log(f"batch size {fitted}: the default {batch} does not hold a whole "
                            f"2*Nt*(1+Na) batch with Na={na} (--batch-size to choose)")
            batch = fitted
        iterations = self.iterations or (math.ceil(KANG["epochs"] * num_train / batch) if kang
                                         else PAPER["iterations"])
        return dataclasses.replace(self, augment=self.augment_name(), batch_size=batch,
                                   iterations=iterations, lr=self.lr or base["lr"],
                                   schedule=self.schedule or base["schedule"], na=na)


def check_combination(augment: str, classifier: str, phase1_kind: str) -> None:
    """Refuse an augmenter / classifier pair that cannot work, saying what would."""
    cls = AUGMENTERS.get(augment)
    if classifier in TRAINING_FREE and augment != "none":
        raise ConfigError(f"--classifier {classifier} needs no training batches, so --augment "
                          f"{augment} would do nothing; use --augment none (or leave it out)")
    if cls.needs_cosine and classifier not in ("linear", "crt"):
        raise ConfigError(f"--augment {augment} trains a cosine classifier with an angular margin: "
                          f"use it with --classifier linear or crt, not {classifier}")
    if classifier in ("lws", "tau-norm") and phase1_kind != "linear":
        raise ConfigError(f"--classifier {classifier} rescales a linear Phase-I classifier; this "
                          f"store's is {phase1_kind}: use linear, crt or ncm")


def method_name(cfg: FinetuneConfig) -> str:
    """fsa, none, cloud, ... for the Phase-I classifier; tau-norm, ncm; else augment-classifier."""
    if cfg.classifier in TRAINING_FREE:
        return cfg.classifier
    return cfg.augment_name() if cfg.classifier == "linear" else f"{cfg.augment_name()}-{cfg.classifier}"


# ---- evaluation on the validation split --------------------------------------------------
def split_features(store, split: str, device: torch.device | str = "cpu"):
    """(pooled (N, C) float32, labels (N,) int64) of a split, on ``device``."""
    return (torch.from_numpy(store.read(split, "pooled")).to(device),
            torch.from_numpy(store.read(split, "labels").astype(np.int64)).to(device))


@torch.no_grad()
def accuracy_on(clf: Classifier, pooled: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Mean per-class top-1 accuracy (classes without samples left out)."""
    preds = clf.to(pooled.device)(pooled).argmax(1)  # (N,)
    return balanced_accuracy(per_class_accuracy(preds.cpu().numpy(), labels.cpu().numpy(),
                                                clf.num_classes))


def val_accuracy(store, clf: Classifier, device: torch.device | str = "cpu") -> float:
    """Mean per-class accuracy of ``clf`` on the store's validation split (an open store or a path)."""
    if isinstance(store, (str, Path)):
        from ltkit.store import open_store

        with open_store(store) as st:
            return val_accuracy(st, clf, device)
    if "val" not in store.splits:
        raise ConfigError(f"{store.path} has no validation split; extract with val images "
                          "(--val-per-class) to choose options without the test set")
    return accuracy_on(clf, *split_features(store, "val", device))


# ---- the classifiers --------------------------------------------------------------------
def initial_classifier(phase1: Classifier, cfg: FinetuneConfig, *, cosine: bool,
                       generator: torch.Generator) -> tuple[Classifier, list[torch.nn.Parameter]]:
    """The classifier to train and its trained parameters."""
    K, C = phase1.weight.shape
    scale = phase1.scale if phase1.kind == "cosine" else cfg.scale
    if cfg.classifier == "crt":  # nn.Linear's init, from our generator
        bound = 1.0 / math.sqrt(C)
        draw = lambda *shape: (torch.rand(*shape, generator=generator,  # noqa: E731
                                          device=generator.device) * 2 - 1) * bound
        weight = draw(K, C)  # (K, C)
        clf = Classifier("cosine", weight, None, scale=scale) if cosine else \
            Classifier("linear", weight, draw(K))
    elif cfg.classifier == "lws":
        clf = Classifier("lws", phase1.weight, phase1.bias)
        clf.weight.requires_grad_(False)
        if clf.bias is not None:
            clf.bias.requires_grad_(False)
        return clf, [clf.class_scale]
    elif cosine and phase1.kind != "cosine":
        clf = Classifier("cosine", phase1.weight, None, scale=scale)
    else:
        clf = Classifier.from_state(phase1.to_state())
    return clf, [p for p in clf.parameters() if p.requires_grad]


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
                        val: tuple[torch.Tensor, torch.Tensor] | None = None
                        ) -> tuple[Classifier, list[dict[str, Any]]]:
    """Train on the augmenter's batches; ``cfg`` resolved. Returns (classifier, history).

    tau-norm and ncm train nothing: `fit` makes them."""
    if cfg.classifier in ("tau-norm", "ncm"):
        raise ConfigError(f"the {cfg.classifier} classifier is not trained on batches; "
                          "make it with ltkit.finetune.fit (or ltkit augment-finetune)")
    with cpu_threads(bank.device, cfg.threads):
        return _train(bank, phase1, cfg, val)


def _train(bank: FeatureBank, phase1: Classifier, cfg: FinetuneConfig,
           val: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[Classifier, list[dict[str, Any]]]:
    device = bank.device
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    augmenter = make_augmenter(cfg.augment, bank, cfg.augment_config())
    clf, params = initial_classifier(phase1, cfg, cosine=augmenter.needs_cosine, generator=generator)
    clf.to(device).train()
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    is_tail = bank.tail_row >= 0  # (K,)
    stats = torch.zeros(5, device=device, dtype=torch.float64)  # loss sum, tail hits/n, head hits/n
    history: list[dict[str, Any]] = []
    logged = 0  # iterations summed in `stats` so far: synced to the host every LOG_EVERY
    with console.progress(cfg.iterations, f"{method_name(cfg)} fine-tuning") as bar, \
            contextlib.closing(iter_batches(augmenter, generator, cfg.iterations)) as batches:
        for it in range(1, cfg.iterations + 1):
            lr = cfg.lr if cfg.schedule == "constant" else \
                cfg.lr * 0.5 * (1 + math.cos(math.pi * (it - 1) / cfg.iterations))
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = next(batches)  # (B, C), (B,)
            logits = margin_logits(clf, x, y, cfg.margin) if augmenter.needs_cosine else clf(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():  # running accuracy on the batch, before this step's update
                hit, tail = (logits.argmax(1) == y).double(), is_tail[y].double()  # (B,), (B,)
                stats += torch.stack([loss.detach().double(), (hit * tail).sum(), tail.sum(),
                                      (hit * (1 - tail)).sum(), (1 - tail).sum()])
            evaluate = val is not None and cfg.eval_every and it % cfg.eval_every == 0
            if it % LOG_EVERY and it != cfg.iterations and not evaluate:
                continue
            s = stats.tolist()
            if not math.isfinite(s[0]):
                raise ArtifactError(f"the fine-tuning loss became {s[0]} by iteration {it}: the "
                                    "store's feature maps hold NaN or infinite values, or --lr is "
                                    "too high; re-extract the store, or lower --lr")
            row = {"iteration": it, "lr": lr, "loss": s[0] / (it - logged),
                   "tail_acc": s[1] / max(s[2], 1.0), "head_acc": s[3] / max(s[4], 1.0)}
            if evaluate:
                row["val_acc"] = accuracy_on(clf.eval(), *val)
                clf.train()
            history.append(row)
            stats.zero_()
            bar.advance(it - logged, loss=row["loss"], tail=row["tail_acc"], head=row["head_acc"])
            logged = it
    return clf.eval(), history


def sweep_on_val(bank: FeatureBank, phase1: Classifier, cfg: FinetuneConfig,
                 val: tuple[torch.Tensor, torch.Tensor], **grid: list) -> list[dict[str, Any]]:
    """Train one classifier per combination of ``grid`` (FinetuneConfig fields -> values to
    try, e.g. ``tau_s=[0.3, 0.5, 0.7], tau_g=[0.3, 0.5]``) on one bank; return each
    combination with its validation accuracy, best first. ``cfg`` must be resolved."""
    import itertools

    unknown = set(grid) - {f.name for f in dataclasses.fields(FinetuneConfig)}
    if unknown:
        raise ConfigError(f"cannot sweep {', '.join(sorted(unknown))}: not a fine-tuning option")
    rows = []
    for values in itertools.product(*grid.values()):  # a loop over configurations
        point = dict(zip(grid, values))
        trial = dataclasses.replace(cfg, **point)
        trial.validate()
        clf, _ = finetune_classifier(bank, phase1, trial)
        rows.append(point | {"val_acc": accuracy_on(clf, *val)})
    return sorted(rows, key=lambda row: -row["val_acc"])  # stable: ties keep grid order


def tau_normalized(phase1: Classifier, tau: float | None, val) -> tuple[Classifier, list[dict], float]:
    """Kang's tau-normalisation; ``tau=None`` picks it on ``val`` (pooled, labels)."""
    if tau is not None:
        return phase1.tau_normalized(tau), [], tau
    if val is None:
        raise ConfigError("--tau auto picks tau on the validation split, which this store lacks; "
                          "give --tau VALUE (Kang et al. found values near 1 work)")
    tau, scores = pick_tau(phase1, [val[0]], val[1].cpu().numpy())
    if tau is None:
        raise ConfigError("--tau auto found no validation image; give --tau VALUE")
    curve = [{"tau": t, "val_acc": s} for t, s in zip(TAU_GRID, scores)]
    return phase1.tau_normalized(tau), curve, tau


def ncm_classifier(store, metric: str, views: bool) -> Classifier:
    """Class means of the stored training features (and views), streamed in chunks."""
    K = len(store.class_names)
    sums = torch.zeros(K, store.shape("train", "pooled")[1], dtype=torch.float64)  # (K, C)
    counts = torch.zeros(K, dtype=torch.float64)  # (K,)
    splits = ["train"] + ([VIEWS_SPLIT] if views and store.views else [])
    for split in splits:
        labels = torch.from_numpy(store.read(split, "labels").astype(np.int64))  # (R,)
        for first, block in store.iter_chunks(split, "pooled"):
            x = torch.from_numpy(block).double()  # (b, C)
            x = F.normalize(x, dim=1) if metric == "cosine" else x
            y = labels[first:first + len(block)]
            sums.index_add_(0, y, x)
            counts.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
    return Classifier("ncm", (sums / counts.clamp_min(1)[:, None]).float(), metric=metric)


# ---- the stage --------------------------------------------------------------------------
def _is_store(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(8) == HDF5_SIGNATURE


def resolve_sources(source: str | Path, cfg: FinetuneConfig, store: str | Path | None
                    ) -> tuple[Path, dict[str, Any] | None, Path | None]:
    """(store path, table or None, table path or None) of a stage input: a table, or a store
    whose table is built beside it (not for the training-free classifiers)."""
    src = resolve_input(source)
    if _is_store(src):
        if store is not None:
            raise ConfigError("--store names a table's store; the input is already a store")
        if cfg.classifier in TRAINING_FREE:
            return src, None, None
        table, table_path = table_for_store(src)
        return src, table, table_path
    table = load_table(src)
    return (Path(store) if store else table_store_path(table)), table, src


def fit(st, table: dict[str, Any] | None, phase1: Classifier, cfg: FinetuneConfig,
        device: torch.device, val) -> tuple[Classifier, list[dict[str, Any]], FinetuneConfig]:
    """The classifier of a resolved ``cfg`` (tau filled in for tau-norm), and its history."""
    if cfg.classifier == "tau-norm":
        clf, history, tau = tau_normalized(phase1, cfg.tau, val)
        return clf, history, dataclasses.replace(cfg, tau=tau)
    if cfg.classifier == "ncm":
        return ncm_classifier(st, cfg.ncm_metric, cfg.views), [], cfg
    augmenter = AUGMENTERS.get(cfg.augment)
    check_augmenter(augmenter, cfg.augment_config())  # fail before loading any data
    bank = load_bank(st, table, device=device, spatial=augmenter.needs_spatial,
                     use_views=cfg.views, resident_bytes=cfg.resident_gib * 2**30,
                     scratch_dir=cfg.scratch_dir)
    console.log(f"{method_name(cfg)}: {cfg.iterations} iterations of {cfg.batch_size} on "
                f"{device}, lr {cfg.lr} ({cfg.schedule}), {bank.num_views} view(s) per image")
    clf, history = finetune_classifier(bank, phase1, cfg, val=val)
    return clf, history, cfg


_RUN_ONLY = ("device", "threads", "eval_every", "resident_gib", "scratch_dir")  # options that leave the result as it is


def _request(cfg: FinetuneConfig) -> dict[str, Any]:
    """The options as asked (before defaults are resolved), less those that only steer the run."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _RUN_ONLY}


def _request_differs(path: Path, request: dict[str, Any], parents: dict[str, Path]) -> str | None:
    """How the classifier at ``path`` differs from one made from these very parents with
    these options; None when it does not."""
    _, meta = load_classifier(path)
    saved = meta["lineage"]
    if set(saved["parents"]) != set(parents):
        return (f"was made from a {' and a '.join(sorted(saved['parents']))}, not a "
                f"{' and a '.join(sorted(parents))}")
    for role, p in parents.items():
        if saved["parents"][role]["sha256"] != file_sha256(p):
            return f"was made from another version of its {role} {p} (the hash differs)"
    return other_options(option_diff(saved["options"].get("request") or {}, request))


def augment_finetune(source: str | Path, cfg: FinetuneConfig, *, out: str | Path | None = None,
                     force: bool = False, store: str | Path | None = None) -> Path:
    """``ltkit augment-finetune``: a table or a store (``-``: its path from stdin) -> the path of
    the classifier artifact written (default: beside the table, named after the method)."""
    from ltkit.store import open_store

    cfg.validate()
    store_path, table, table_path = resolve_sources(source, cfg, store)
    out = Path(out or (table_path or store_path).parent / f"{store_path.stem}.{method_name(cfg)}.pt")
    parents = {"store": store_path} | ({"table": table_path} if table_path else {})
    request = _request(cfg)
    if reuse_existing(out, force, lambda p: _request_differs(p, request, parents)):
        console.log(f"{out} exists with the same options: reusing it (--force to fine-tune again)")
        return out.expanduser()
    out = check_output(out, force, inputs=[src for src in (store_path, table_path) if src],
                       replaces=earlier_artifact(CLASSIFIER_FORMAT), kind="classifier")
    device = resolve_device(cfg.device)
    with open_store(store_path) as st:
        if table is not None and list(table["class_names"]) != list(st.class_names):
            raise ArtifactError(f"the table's classes differ from those of {store_path}; give the "
                                "store the table was built from")
        if table is not None and table["train_counts"].tolist() != st.train_counts.tolist():
            raise ArtifactError(f"the table was built from a store with other training counts than "
                                f"{store_path}; rebuild the table from this store with ltkit "
                                "confusing-classes")
        phase1 = Classifier.from_store(st)
        check_combination(cfg.augment_name(), cfg.classifier, phase1.kind)
        val = split_features(st, "val", device) if "val" in st.splits else None
        if val is None and cfg.eval_every:
            console.warn(f"--eval-every {cfg.eval_every}: {store_path} has no validation split, so "
                         "there is nothing to measure along the way (extract with validation images)")
        cfg = cfg.resolved(st.rows("train"), int(table["top"]) if table is not None else 3)
        clf, history, cfg = fit(st, table, phase1, cfg, device, val)
    summary = {}
    if val is not None:
        summary = {"val_acc": accuracy_on(clf, *val), "phase1_val_acc": accuracy_on(phase1, *val)}
        console.log(f"validation accuracy {summary['val_acc']:.4f} "
                    f"(Phase I {summary['phase1_val_acc']:.4f})")
    options = dataclasses.asdict(cfg) | {"method": method_name(cfg), "phase1_kind": phase1.kind,
                                         "request": request}
    return save_classifier(out, clf.cpu(), method=method_name(cfg),
                           lineage=make_lineage(parents, options, cfg.seed),
                           options=options | summary, history=history)
