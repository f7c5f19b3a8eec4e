"""What docs/results.md is made of: every backbone with the exact commands that make it, the
Phase-II runs of each section, and which backbones each section reads. No work is done here
(`results_run` runs it, `results_render` / `results_sections` write the page).

The recipe strings are the very commands that trained the stores the page reads, option for
option in the same order, so that `train-backbone` and `extract` reuse a finished backbone or
store (ltkit compares the options, not the order; the page shows them as they were typed):
the long-tail backbones as `LT` + schedule, loss and `--bound-per-class 500`; the Phase-I recipe
study (issue 17) as `STUDY` + schedule + its own `--lr` and recipe options.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LT = "--data fashion-mnist-lt --profile exp --arch resnet32 --batch-size 128 --lr 0.1 --seed 0"
STUDY = "--data fashion-mnist-lt --profile exp --arch resnet32 --batch-size 128 --seed 0"
BOUND = "--bound-per-class 500"  # 500 balanced held-out images per class: the bound split
MAPS = "--spatial-splits train,val,test,bound"  # the spatial head trains, selects and is tested on maps


@dataclass(frozen=True)
class Backbone:
    name: str              # folder under --runs
    train: str             # every train-backbone option, in the order the stores were trained with
    label: str             # how the page names it
    minutes: int           # rough time to train it on the 2-core CPU (one torch thread, shared)
    ceiling: bool = False  # the full balanced set: no left-out pool, so no bound split

    def folder(self, runs: Path) -> Path:
        return runs / self.name

    def train_args(self, runs: Path) -> list[str]:
        return ["train-backbone", *self.train.split(), "--out", str(self.folder(runs) / "backbone.pt")]

    def extract_args(self, runs: Path) -> list[str]:
        keep = [] if self.ceiling else MAPS.split()  # a ceiling: extract's defaults, as its store was made
        folder = self.folder(runs)
        return ["extract", str(folder / "backbone.pt"), *keep, "--out", str(folder / "features.h5")]


def lt(name: str, label: str, minutes: int, *, epochs: int = 10, imbalance: int = 100, loss: str = "ce",
       extra: str = "") -> Backbone:
    """A long-tailed backbone of the page's recipe, with its bound split."""
    options = f"{LT} --epochs {epochs} --imbalance {imbalance} --loss {loss} {extra} {BOUND}"
    return Backbone(name, " ".join(options.split()), label, minutes)


def ceiling(name: str, label: str, minutes: int, *, epochs: int) -> Backbone:
    """The same recipe on the full balanced training set (imbalance 1: nothing left out to hold)."""
    return Backbone(name, f"{LT} --epochs {epochs} --imbalance 1 --loss ce", label, minutes, ceiling=True)


def recipe(name: str, label: str, minutes: int, options: str, *, epochs: int = 10) -> Backbone:
    """A Phase-I recipe at IF 100 (issue 17): `STUDY`, the schedule, then its own options."""
    return Backbone(name, f"{STUDY} --epochs {epochs} --imbalance 100 --loss ce {BOUND} {options}", label, minutes)


BACKBONES = [
    lt("if100-ce", "CE", 25),
    lt("if100-focal", "focal (gamma 1)", 25, loss="focal"),
    lt("if100-cb", "class-balanced (beta 0.9999)", 25, loss="cb"),
    lt("if100-ldam-drw", "LDAM-DRW", 25, loss="ldam", extra="--drw-epoch 8"),
    lt("if100-balanced-softmax", "balanced softmax", 25, loss="balanced-softmax"),
    lt("if100-scl-ldam", "SCL + LDAM-DRW", 50, loss="ldam", extra="--drw-epoch 8 --scl-weight 0.5"),
    lt("if100-scl-rsg-ldam", "SCL + RSG + LDAM-DRW", 60, loss="ldam", extra="--drw-epoch 8 --scl-weight 0.5 --rsg"),
    lt("if10-ce", "CE, IF 10", 40, imbalance=10),
    lt("if200-ce", "CE, IF 200", 25, imbalance=200),
    lt("if1000-ce", "CE, IF 1000", 25, imbalance=1000),
    lt("if100-ce-4ep", "CE, 4 epochs", 10, epochs=4),
    lt("if1000-ce-4ep", "CE, IF 1000, 4 epochs", 10, epochs=4, imbalance=1000),
    ceiling("full-ce", "CE, full balanced set, 10 epochs (ceiling)", 100, epochs=10),
    ceiling("full-ce-30ep", "CE, full balanced set, 30 epochs (ceiling)", 300, epochs=30),
    recipe("recipes/mixup", "mixup 0.2", 25, "--lr 0.1 --mixup 0.2"),
    recipe("recipes/randaugment", "RandAugment", 30, "--lr 0.1 --augment-policy randaugment"),
    recipe("recipes/wd5e-3", "weight decay 5e-3", 25, "--lr 0.1 --weight-decay 5e-3"),
    recipe("recipes/wb-stage1", "weight balancing, stage 1 (lr 0.01, wd 5e-3)", 25, "--lr 0.01 --weight-decay 5e-3"),
    recipe("recipes/label-smoothing", "label smoothing 0.1", 25, "--lr 0.1 --label-smoothing 0.1"),
    recipe("recipes/cutmix", "cutmix 1.0", 25, "--lr 0.1 --cutmix 1.0"),
    recipe("recipes/adamw", "AdamW (lr 1e-3, wd 0.05)", 25, "--lr 1e-3 --optimizer adamw --weight-decay 0.05"),
    Backbone("recipes/ls-mixup", f"{STUDY} --imbalance 100 --loss ce {BOUND} --epochs 10 --lr 0.1 "
             "--label-smoothing 0.1 --mixup 0.2", "label smoothing 0.1 + mixup 0.2", 25),  # queue4.sh's order
    recipe("recipes30/ce", "CE, 30 epochs", 75, "--lr 0.1", epochs=30),
    # the bound's choice at 10 epochs (cRT on bound), then 30 epochs at IF 100 and IF 1000 (queue5/6.sh)
    Backbone("recipes30/label-smoothing", f"{STUDY} --loss ce {BOUND} --imbalance 100 --epochs 30 --lr 0.1 "
             "--label-smoothing 0.1", "label smoothing 0.1, 30 epochs", 75),
    Backbone("recipes30/if1000-label-smoothing", f"{STUDY} --loss ce {BOUND} --imbalance 1000 --epochs 30 --lr 0.1 "
             "--label-smoothing 0.1", "label smoothing 0.1, 30 epochs, IF 1000", 60),
]
BY_NAME = {b.name: b for b in BACKBONES}

# Phase-II runs by file stem (KEY-sSEED.pt in the backbone's folder): shared by every section
# that reads them, so the IF 100 table's cRT is the bound section's and the recipe table's.
RUNS = {"none": "--augment none", "crt": "--classifier crt", "lws": "--classifier lws",
        "tau-norm": "--classifier tau-norm", "ncm": "--classifier ncm", "cloud": "--augment cloud",
        # Algorithm 1 as the paper gives it (FSA's `auto` keeps no augmentation unless validation
        # shows a gain beyond its noise, so `--augment fsa` alone may train `none`'s batches)
        "fsa": "--augment fsa --tau-s 0.5 --tau-g 0.3 --gamma-min 0 --tail-draw class --head-draw class",
        "crt-bound": "--classifier crt --train-on bound",
        "spatial": "--head spatial --classifier crt",
        "spatial-bound": "--head spatial --classifier crt --train-on bound"}
TWIN = {"crt": "crt-bound", "spatial": "spatial-bound"}  # evaluated with --bound TWIN: classifier gap closed
PHASE2 = ("none", "crt", "lws", "tau-norm", "ncm", "cloud", "fsa")
BOUND_RUNS = {"crt": "pooled cRT", "crt-bound": "pooled bound", "spatial": "spatial head (cRT on the maps)",
              "spatial-bound": "spatial bound"}

# Which backbones each section reads.
PHASE2_ON = ("if100-ce", "if10-ce", "if200-ce")  # every Phase-II method, several seeds
LOSSES = ("if100-ce", "if100-focal", "if100-cb", "if100-ldam-drw", "if100-balanced-softmax")
SYSTEM = ("if100-ce", "if100-ldam-drw", "if100-scl-ldam", "if100-scl-rsg-ldam")
FSA_ON = ("if100-ldam-drw", "if100-scl-ldam", "if100-scl-rsg-ldam")  # FSA after each system
BOUND_ON = ("if100-ce-4ep", "if100-ce", "if1000-ce-4ep", "if1000-ce", "if100-balanced-softmax")
# the sweep's whole table on the page: the CE stores, the best Phase-I loss, the best recipe at IF 1000
SWEEP_ON = ("if100-ce", "if1000-ce", "if100-balanced-softmax", "recipes30/if1000-label-smoothing")
RECIPES = ("if100-ce", *(b.name for b in BACKBONES if b.name.startswith(("recipes/", "recipes30/"))
                         and "if1000" not in b.name))  # the IF 100 recipe table
CEILINGS = {10: "full-ce", 30: "full-ce-30ep"}  # by epochs
CEILING_TAIL = "if100-ce"  # a balanced set has no tail of its own: the ceilings' tail is this store's
SECTIONS = ("bound", "sweep", "phase2", "recipes")  # what --skip may leave out


def sweeps_of(section: str) -> tuple[str, ...]:
    """The backbones a section runs `ltkit sweep` on."""
    return {"sweep": SWEEP_ON, "recipes": RECIPES}.get(section, ())


def runs_of(section: str) -> dict[str, tuple[str, ...]]:
    """The Phase-II runs (`RUNS` keys) a section needs, per backbone."""
    if section == "phase2":
        return {**{name: PHASE2 for name in PHASE2_ON}, **{name: ("fsa",) for name in FSA_ON}}
    if section == "bound":
        return {name: tuple(BOUND_RUNS) for name in BOUND_ON}
    if section == "recipes":
        return {name: ("crt",) for name in RECIPES}
    return {}
