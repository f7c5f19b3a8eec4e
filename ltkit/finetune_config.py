"""The Phase-II stage's config: `FinetuneConfig`, every field commented, and its flat option
names (`to_options` / `from_options`: what a classifier artifact records, a rerun compares and
a sweep varies). `resolved` fills every None from the chosen method's schedule; `method_name`
names the result (fsa, crt, fsa-lws, ...). `ltkit.finetune` runs the stage with it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ltkit import choices, console
from ltkit.augment import AUGMENTERS, AUTO, AUTO_FIXED, AugmentConfig, nearest_balanced_batch
from ltkit.classifiers import NCM_METRICS
from ltkit.errors import ConfigError
from ltkit.methods import CLASSIFIERS, get_method
from ltkit.registry import check_choice
from ltkit.runoptions import RUN_FIELDS, RunOptions
from ltkit.spatial_head import BLOCK_BEFORE, SpatialHeadConfig

SCHEDULES = choices.FINETUNE_SCHEDULES
TRAIN_SPLITS = choices.TRAIN_ON  # bound: the empirical classification bound (DisAlign)
# the spatial head's options: recorded only for a spatial head (an artifact of before has none)
HEAD_OPTIONS = ("head", "head_depth", "head_width", "head_kernel", "head_block")
# those a rerun compares as resolved, not as asked (None = the method's default, which may move)
RESOLVED_HEAD = ("head_depth", "head_width", "head_block")
# what `resolved` fills in from the method's defaults and a rerun must find unchanged
SCHEDULE_OPTIONS = ("iterations", "lr", "schedule", "batch_size", *RESOLVED_HEAD)
# a saved spatial artifact's resolved value where it predates the option
BEFORE = {"head_block": BLOCK_BEFORE}
# the nested AugmentConfig's fields under their flat option names (the artifact's options)
BATCH_OPTIONS = {f.name: ("views" if f.name == "use_views" else f.name) for f in dataclasses.fields(AugmentConfig)}


def _stage_batches() -> AugmentConfig:
    # None: the method's default / the table's Nf; AUTO: chosen on validation (ltkit.augment_auto)
    return AugmentConfig(batch_size=None, na=None, **dict.fromkeys(AUTO_FIXED, AUTO))


def _stage_run() -> RunOptions:
    return RunOptions(threads=1)  # batches are small: extra CPU threads mostly wait on each other


@dataclass
class FinetuneConfig:
    augment: str = "auto"          # augmenter; auto: the classifier's default (fsa for linear, ...)
    classifier: str = "linear"     # a name of ltkit.methods.CLASSIFIERS
    iterations: int | None = None  # SGD steps; None: the method's (6400, or 10 epochs-equivalent)
    lr: float | None = None        # None: the method's (0.001 fixed for linear, paper; 0.2 for crt, lws, Kang)
    schedule: str | None = None    # constant | cosine (to 0); None: the method's
    momentum: float = 0.9          # SGD momentum (the paper gives none; 0.9 as in Phase I)
    weight_decay: float = 5e-4     # SGD weight decay on the trained parameters
    batches: AugmentConfig = field(default_factory=_stage_batches)  # the augmenter's options;
    #                                batch_size / na None: the method's batch, the table's Nf;
    #                                tau_s, tau_g, gamma_min, draws auto: chosen on validation
    margin: float = 0.2            # cosine heads: additive angular margin m, radians, in [0, pi/2)
    scale: float = 16.0            # cosine logit scale s (a cosine Phase-I head keeps its own)
    tau: float | None = None       # tau-norm exponent; None: chosen on the validation split
    ncm_metric: str = "cosine"     # ncm: cosine | l2
    method_options: dict[str, Any] = field(default_factory=dict)  # the method's own options (--method-option)
    head: str = "linear"           # a name of ltkit.heads.HEADS: linear (pooled features) | spatial (maps)
    head_depth: int | None = None  # spatial: blocks on the maps, 0..8 (None: `head_defaults`)
    head_width: int | None = None  # spatial: their channels (0: the maps' own, residual; None: `head_defaults`)
    head_kernel: int = 3           # spatial: conv kernel side, odd
    head_block: str | None = None  # spatial: a name of ltkit.spatial_head.BLOCKS (None: `head_defaults`)
    train_on: str = "train"        # train: the long-tailed split; bound: the store's balanced bound split
    val_part: str = "all"          # the validation images auto options are chosen on: all | tune | select (a half)
    seed: int = 0                  # one seed for every draw and initialisation
    run: RunOptions = field(default_factory=_stage_run)  # device, threads, eval cadence, memory: not the result

    def validate(self) -> None:
        method = CLASSIFIERS.get(self.classifier)
        if self.augment != "auto":
            AUGMENTERS.get(self.augment)
        if self.schedule is not None:
            check_choice(self.schedule, SCHEDULES, "--schedule")
        check_choice(self.ncm_metric, NCM_METRICS, "--ncm-metric")
        check_choice(self.train_on, TRAIN_SPLITS, "--train-on")
        check_choice(self.val_part, choices.VAL_PARTS, "--val-part")
        from ltkit.heads import HEADS

        HEADS.get(self.head)
        self.spatial_head().validate()
        given = [k for k in HEAD_OPTIONS[1:] if getattr(self, k) != getattr(FinetuneConfig, k)]
        if self.head == "linear" and given:
            raise ConfigError(f"--{given[0].replace('_', '-')} shapes a spatial head: give --head spatial "
                              "with it (the linear head reads the pooled features)")
        for name in ("iterations", "batch_size", "na"):
            value = getattr(self.batches if name in BATCH_OPTIONS else self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError("--lr must be positive")
        if not (min(self.momentum, self.weight_decay) >= 0):
            raise ConfigError("--momentum and --weight-decay must be >= 0")
        if not 0 <= self.margin < math.pi / 2 or not (math.isfinite(self.scale) and self.scale > 0):
            raise ConfigError("--margin must lie in [0, pi/2) and --scale be positive")
        if self.tau is not None and not (math.isfinite(self.tau) and self.tau >= 0):
            raise ConfigError(f"--tau must be a finite number >= 0 (or auto), got {self.tau}")
        if "weight_decay" in method.options and self.weight_decay != FinetuneConfig.weight_decay:
            raise ConfigError(f"--classifier {self.classifier} chooses its own weight decay: give "
                              "--method-option weight_decay=VALUE (or leave it to auto), not --weight-decay")
        unknown = sorted(set(self.method_options) - set(method.options))
        if unknown:
            raise ConfigError(f"--method-option {unknown[0]}: classifier {self.classifier} has no such "
                              f"option (its options: {', '.join(sorted(method.options)) or 'none'})")
        method().check_options(method.options | self.method_options)
        self.run.validate()
        self.batches.validate()

    def spatial_head(self) -> SpatialHeadConfig:
        """The spatial head's blocks: the options given, the rest from `head_defaults`."""
        given = {"depth": self.head_depth, "width": self.head_width, "block": self.head_block}
        chosen = self.head_defaults() | {k: v for k, v in given.items() if v is not None}
        return SpatialHeadConfig(kernel=self.head_kernel, **chosen)

    def head_defaults(self) -> dict[str, Any]:
        """--head-depth / --head-width / --head-block not given: `choices.SPATIAL_FRESH` when the
        method draws a fresh final layer (crt), `choices.SPATIAL_PHASE1` (the maps' own width)
        when it starts from the Phase-I weights (linear, lws)."""
        return dict(choices.SPATIAL_FRESH if get_method(self.classifier).reinitialises else choices.SPATIAL_PHASE1)

    def augment_name(self) -> str:
        return self.augment if self.augment != "auto" else get_method(self.classifier).default_augment

    def resolved(self, num_train: int, nf: int) -> FinetuneConfig:
        """Every None filled in from the method's schedule (the paper's for linear, Kang's for
        crt and lws) and the table's Nf."""
        from ltkit.heads import HEADS

        method = get_method(self.classifier)
        base = HEADS.get(self.head).schedule or method.schedule
        batch, na = self.batches.batch_size or base["batch_size"], self.batches.na or nf
        augmenter = AUGMENTERS.get(self.augment_name())
        if self.batches.batch_size is None and method.trains and augmenter.balanced_batches:
            fitted = nearest_balanced_batch(batch, na)  # a default that fits Na
            if fitted != batch:
                console.log(f"batch size {fitted}: the default {batch} does not hold a whole "
                            f"2*Nt*(1+Na) batch with Na={na} (--batch-size to choose)")
            batch = fitted
        iterations = self.iterations or (math.ceil(base["epochs"] * num_train / batch) if "epochs" in base
                                         else base["iterations"])
        fixed = {} if getattr(augmenter, "auto_grid", ()) else \
            {name: AUTO_FIXED[name] for name in self.batches.auto_fields()}  # nothing to choose among
        blocks = self.spatial_head() if self.head != "linear" else None
        head = {} if blocks is None else {"head_depth": blocks.depth, "head_width": blocks.width,
                                          "head_block": blocks.block}
        return dataclasses.replace(self, augment=self.augment_name(), iterations=iterations, **head,
                                   batches=dataclasses.replace(self.batches, batch_size=batch, na=na, **fixed),
                                   lr=self.lr or base["lr"], schedule=self.schedule or base["schedule"],
                                   method_options=method.options | self.method_options)

    # ---- the flat option names (artifacts, sweeps, compare) ----------------------------
    def to_options(self) -> dict[str, Any]:
        """The options that make the result, flat (``tau_s``, ``batch_size``, ``views``, ...):
        what a classifier artifact records and a rerun compares; `run` is left out."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name == "batches":
                out |= {BATCH_OPTIONS[k]: v for k, v in dataclasses.asdict(self.batches).items()}
            elif f.name == "method_options":
                if self.method_options:  # recorded only when the method has options
                    out["method_options"] = dict(self.method_options)
            elif f.name in HEAD_OPTIONS and self.head == "linear" or \
                    f.name == "train_on" and self.train_on == "train" or \
                    f.name == "val_part" and self.val_part == "all":
                continue  # options of before: an artifact without them is the same run
            elif f.name != "run":
                out[f.name] = getattr(self, f.name)
        return out

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> FinetuneConfig:
        """A config from flat options (as `to_options`, plus any `RunOptions` field, or an
        artifact's options of before, where those were flat too); an unknown name is refused."""
        batch_names = {flat: name for name, flat in BATCH_OPTIONS.items()}
        top = {f.name for f in dataclasses.fields(cls)} - {"batches", "run"}
        unknown = sorted(set(options) - top - set(batch_names) - RUN_FIELDS - {"run"})
        if unknown:
            raise ConfigError(f"{', '.join(unknown)}: not a fine-tuning option")
        run = dict(options.get("run") or {}) | {k: v for k, v in options.items() if k in RUN_FIELDS}
        return cls(**{k: v for k, v in options.items() if k in top},
                   batches=dataclasses.replace(_stage_batches(), **{batch_names[k]: v for k, v in options.items()
                                                                    if k in batch_names}),
                   run=dataclasses.replace(_stage_run(), **run))

    def schedule_change(self, saved: dict[str, Any], num_train: int, nf: int) -> str | None:
        """How the schedule an artifact ran (its ``saved`` resolved options) differs from the
        one these options resolve to now, for `reuse_existing`; None when it does not. The
        same request can mean another run once a default changed (la-loss's epochs did)."""
        if not get_method(self.classifier).trains:
            return None
        with console.quietly():  # its notes belong to the run, if one follows
            now = self.resolved(num_train, nf).to_options()
        spatial = {k: v for k, v in BEFORE.items() if saved.get("head", "linear") != "linear"}
        was = {k: saved.get(k, spatial.get(k)) for k in SCHEDULE_OPTIONS if k in saved or k in spatial}
        was_opts, now_opts = saved.get("method_options") or {}, now.get("method_options") or {}
        was |= {f"method option {k}": was_opts[k] for k, v in now_opts.items()  # defaults, not choices
                if k not in self.method_options and k in was_opts and v != AUTO}
        now = now | {f"method option {k}": v for k, v in now_opts.items()}
        diff = [f"{k} {v} then, {now.get(k)} now" for k, v in was.items() if v != now.get(k)]
        return f"ran another schedule than these options give now ({'; '.join(diff)}: a default changed " \
               "since, or an option resolved otherwise)" if diff else None

    def replace(self, **changes: Any) -> FinetuneConfig:
        """A copy with options changed by their flat names (``tau_s=0.7``, ``device="cpu"``)."""
        return FinetuneConfig.from_options(self.to_options() | dataclasses.asdict(self.run) | changes)


def method_name(cfg: FinetuneConfig) -> str:
    """fsa, none, cloud, ... for the Phase-I classifier; tau-norm, ncm; else augment-classifier;
    prefixed with the head kind when not linear, ``-bound`` appended when trained on bound."""
    name = get_method(cfg.classifier).method_name(cfg.augment_name())
    name = name if cfg.head == "linear" else f"{cfg.head}-{name}"
    return name if cfg.train_on == "train" else f"{name}-{cfg.train_on}"
