"""The command line answers without torch: --help, --version and shell completion import none
of it, the choices they show are the registries' names, every name-valued option lists and
completes its choices, and long option lists come in sections with examples at the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from ltkit import choices
from ltkit.cli import app
from ltkit.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
STAGES = [c.name for c in app.registered_commands]
# Options whose value is a name from a fixed list (or a registry): each must list and complete it.
NAME_VALUED = {"--arch", "--head", "--loss", "--sampler", "--data", "--profile", "--schedule", "--augment",
               "--classifier", "--ncm-metric", "--tail-draw", "--head-draw", "--split", "--group", "--metric",
               "--format", "--precision", "--compression", "--device"}


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=120,
                          cwd=ROOT)


# One fresh interpreter runs every help, the version and a completion, then lists what it imported.
_NO_TORCH = """
import contextlib, io, json, os, sys
from ltkit.cli import main
asked = [["--help"], ["--version"], *[[s, "--help"] for s in STAGES]]
for argv in asked:
    sys.argv = ["ltkit", *argv]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main()
os.environ.update(_LTKIT_COMPLETE="complete_bash", COMP_WORDS="ltkit train-backbone --loss ", COMP_CWORD="3")
sys.argv = ["ltkit"]
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    main()
heavy = ("torch", "torchvision", "numpy", "h5py", "matplotlib", "timm")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""


def test_help_version_and_completion_import_no_torch():
    result = _python(f"STAGES = {STAGES!r}\n" + _NO_TORCH)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == []


def test_importtime_of_help_names_no_torch_module():
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "ltkit", "train-backbone", "--help"],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert result.returncode == 0 and "--loss" in result.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line]
    assert "ltkit.cli.train" in imported and not [m for m in imported if m.split(".")[0] == "torch"]


def _registries() -> list[tuple[Registry, tuple[str, ...]]]:
    from ltkit.augment import AUGMENTERS
    from ltkit.classifiers import HEAD_KINDS
    from ltkit.data import DATASETS
    from ltkit.data.transforms import POLICIES
    from ltkit.losses import LOSSES
    from ltkit.methods import CLASSIFIERS
    from ltkit.models import HEADS, MODELS
    from ltkit.recipes import OPTIMIZERS
    from ltkit.samplers import SAMPLERS

    return [(DATASETS, choices.DATASETS), (MODELS, choices.BACKBONES), (HEADS, choices.HEADS),
            (LOSSES, choices.LOSSES), (SAMPLERS, choices.SAMPLERS), (AUGMENTERS, choices.AUGMENTERS),
            (CLASSIFIERS, choices.CLASSIFIERS), (HEAD_KINDS, choices.HEAD_KINDS),
            (OPTIMIZERS, choices.OPTIMIZERS), (POLICIES, choices.AUGMENT_POLICIES)]


@pytest.mark.parametrize("index", range(10))
def test_each_registry_holds_exactly_its_torch_free_names(index):
    registry, declared = _registries()[index]
    assert registry.declared == declared
    assert registry.names() == sorted(declared), f"{registry.kind}: registered and ltkit/choices.py differ"


def test_a_name_missing_from_choices_cannot_be_registered():
    registry = Registry("loss", declared=("ce",))
    registry.register("ce")(object())
    with pytest.raises(ValueError, match="not declared in ltkit/choices.py"):
        registry.register("new-loss")(object())


def _name_valued():
    for command in get_command(app).commands.values():
        for param in command.params:
            flag = next((o for o in param.opts if o.startswith("--")), None)
            if flag in NAME_VALUED and not getattr(param, "is_flag", False):  # not --augment/--no-augment
                yield command.name, flag, param


def test_every_name_valued_option_lists_its_choices_in_help_and_completes_them():
    seen = set()
    for stage, flag, param in _name_valued():
        completed = [item.value for item in param.shell_complete(None, "")]
        assert completed, f"{stage} {flag} completes nothing"
        for name in completed:
            if name != "cuda":  # --device: cuda:N in the help
                assert name in param.help, f"{stage} {flag}: {name} not in its help"
        assert all(item.value.startswith("c") for item in param.shell_complete(None, "c"))
        seen.add(flag)
    assert seen == NAME_VALUED  # no stage lost one of them


def test_arch_lists_and_completes_timm_names():
    command = get_command(app).commands["train-backbone"]
    arch = next(p for p in command.params if "--arch" in p.opts)
    assert "timm/NAME" in arch.help and [i.value for i in arch.shell_complete(None, "ti")] == ["timm/NAME"]


def test_completion_through_the_entry_point_gives_the_choices():
    code = "import sys; sys.argv = ['ltkit']\nfrom ltkit.cli import main\nmain()"
    result = _python(code, {"_LTKIT_COMPLETE": "complete_bash", "COMP_WORDS": "ltkit evaluate x --group ",
                            "COMP_CWORD": "4"})
    assert result.stdout.split() == list(choices.SUMMARY_GROUPS)
    result = _python(code, {"_LTKIT_COMPLETE": "complete_bash", "COMP_WORDS": "ltkit train-backbone --sampler c",
                            "COMP_CWORD": "3"})
    assert result.stdout.split() == ["class-balanced"]


def _help(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0
    return result.stdout


def test_train_backbone_options_come_in_sections():
    text = _help("train-backbone")
    sections = [line[:-1] for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert sections == ["Data", "Model", "Loss", "Sampler", "Optimiser", "SCL (supervised contrastive)",
                        "RSG (rare-class sample generator)", "Run", "Options"]
    assert text.index("--rsg-centers") > text.index("RSG (rare") > text.index("--scl-dim")


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_help_ends_with_examples(stage):
    tail = _help(stage).rstrip().split("Examples:")[-1]
    assert tail.strip().startswith(f"ltkit {stage}") or f"| ltkit {stage}" in tail


@pytest.mark.parametrize("stage", ["evaluate", "augment-finetune"])
def test_tau_reads_the_same_in_both_stages(stage):
    text = " ".join(_help(stage).split())
    assert "auto (chosen on the validation split by balanced accuracy, 0..2 step 0.1)" in text
    result = CliRunner().invoke(app, [stage, "nothing.h5", "--tau", "abc"])
    assert result.exit_code == 2 and "--tau takes a number >= 0 (e.g. 1.0) or auto, got 'abc'" in result.stderr


def test_tau_defaults_the_same_way_in_both_stages():
    import typer.main

    commands = typer.main.get_command(app).commands
    defaults = {stage: next(p for p in commands[stage].params if p.name == "tau").default
                for stage in ("evaluate", "augment-finetune")}
    assert defaults == {"evaluate": None, "augment-finetune": None}
    for stage in defaults:
        assert "Not given, in every stage: a tau-norm classifier takes auto" in " ".join(_help(stage).split())


@pytest.mark.parametrize("stage", ["evaluate", "plot-features"])
def test_split_is_the_store_split_everywhere(stage):
    text = " ".join(_help(stage).split())
    assert "--split <str> Store split" in text


def test_every_option_of_every_stage_sits_in_a_section():
    import typer.main

    for name, command in typer.main.get_command(app).commands.items():
        loose = [p.opts[0] for p in command.params
                 if p.param_type_name == "option" and p.name != "help" and not getattr(p, "rich_help_panel", None)]
        assert loose == [], f"ltkit {name}: options outside a help section: {loose}"
