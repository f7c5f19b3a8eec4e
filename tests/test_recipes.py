"""train-backbone's Phase-I recipes (ltkit.recipes, POLICIES): options, checks, resume, records."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.transforms import v2

from fakedata import write_fashion_mnist
from ltkit.data import DatasetSpec, build_splits
from ltkit.data.transforms import POLICIES
from ltkit.errors import ConfigError
from ltkit.recipes import make_mixer, make_optimizer, project_rows
from ltkit.train import TrainConfig, default_out
from test_train import TINY, run_cli

RECIPES = {  # option args -> what the checkpoint's config records
    "mixup": (["--mixup", "0.2"], {"mixup": 0.2}),
    "cutmix+mixup": (["--mixup", "0.4", "--cutmix", "1.0", "--loss", "ldam"], {"mixup": 0.4, "cutmix": 1.0}),
    "policy": (["--augment-policy", "trivialaugment"], {"augment_policy": "trivialaugment"}),
    "adamw": (["--optimizer", "adamw", "--lr", "1e-3", "--weight-decay", "0.05"],
              {"optimizer": "adamw", "weight_decay": 0.05}),
    "smoothing": (["--label-smoothing", "0.1", "--loss", "balanced-softmax"], {"label_smoothing": 0.1}),
    "wb": (["--lr", "0.01", "--weight-decay", "5e-3", "--max-norm", "0.5"], {"weight_decay": 5e-3, "max_norm": 0.5}),
}


def _flat(config: dict) -> dict:
    return {**config, **config["loss_options"]}


@pytest.mark.parametrize("name", RECIPES)
def test_each_recipe_trains_and_is_recorded_in_the_checkpoint_and_its_lineage(tmp_path, name):
    args, recorded = RECIPES[name]
    out = tmp_path / "b.pt"
    result = run_cli("train-backbone", *TINY, "--epochs", "1", *args, "--out", str(out))
    assert result.exit_code == 0, result.stderr
    ckpt = torch.load(out, weights_only=True)
    for key, value in recorded.items():
        assert _flat(ckpt["config"])[key] == value
        assert _flat(ckpt["lineage"]["options"])[key] == value
    assert math.isfinite(ckpt["history"][0]["loss"])
    again = run_cli("train-backbone", *TINY, "--epochs", "1", *args, "--out", str(out))
    assert again.exit_code == 0 and "reusing" in again.stderr  # the same recipe is the same run
    plain = run_cli("train-backbone", *TINY, "--epochs", "1", "--out", str(out))
    assert plain.exit_code == 2 and "--force" in plain.stderr  # without it, another run


@pytest.mark.parametrize("args, needle", [
    (["--mixup", "-0.2"], "--mixup is a Beta"),
    (["--cutmix", "nan"], "--cutmix is a Beta"),
    (["--label-smoothing", "1.0"], "--label-smoothing must lie in [0, 1)"),
    (["--label-smoothing", "-0.1"], "--label-smoothing must lie in [0, 1)"),
    (["--augment-policy", "autoaugmentt"], "randaugment, trivialaugment"),
    (["--optimizer", "lion"], "adamw, sgd"),
    (["--weight-decay", "-1e-4"], "--weight-decay must be"),
    (["--momentum", "1.5"], "--momentum must lie in [0, 1)"),
    (["--max-norm", "0"], "--max-norm is a radius"),
    (["--max-norm", "1", "--loss", "ldam"], "cosine head normalises"),
    (["--mixup", "0.2", "--rsg"], "SCL and RSG need"),
    (["--cutmix", "1", "--scl-weight", "0.5"], "SCL and RSG need"),
    (["--augment-policy", "randaugment", "--no-augment"], "drop --no-augment"),
])
def test_bad_recipe_inputs_are_one_line_errors(tmp_path, args, needle):
    result = run_cli("train-backbone", *TINY, "--epochs", "1", *args, "--out", str(tmp_path / "b.pt"))
    assert result.exit_code == 2, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "b.pt").exists()  # before any data


@pytest.mark.parametrize("policy", POLICIES.names())
@pytest.mark.parametrize("channels", [1, 3])
def test_every_policy_works_on_grey_and_colour_uint8_images(policy, channels):
    transform = POLICIES.get(policy)()
    image = torch.randint(0, 256, (channels, 28, 28), dtype=torch.uint8)
    for seed in range(30):  # many draws: every op of a policy meets the image
        torch.manual_seed(seed)
        out = image if transform is None else transform(image)
        assert out.shape == image.shape and out.dtype == torch.uint8


def test_a_policy_joins_the_training_transform_only(tmp_path):
    root = write_fashion_mnist(tmp_path / "fm", per_class=30)
    spec = DatasetSpec(name="fashion-mnist-lt", root=str(root), imbalance=2, val_per_class=2)
    splits = build_splits(spec, policy="randaugment")
    assert any(isinstance(t, v2.RandAugment) for t in splits.train.transform.transforms)
    assert not any(isinstance(t, v2.RandAugment) for t in splits.test.transform.transforms)
    image, label = splits.train[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32  # grey, normalised
    plain = build_splits(spec)
    assert not any(isinstance(t, v2.RandAugment) for t in plain.train.transform.transforms)


def test_the_mixer_gives_soft_targets_and_with_both_picks_one_per_batch():
    spec = DatasetSpec(name="synthetic")
    assert make_mixer(TrainConfig(data=spec), 4) is None
    assert isinstance(make_mixer(TrainConfig(data=spec, mixup=0.2), 4), v2.MixUp)
    assert isinstance(make_mixer(TrainConfig(data=spec, cutmix=1.0), 4), v2.CutMix)
    both = make_mixer(TrainConfig(data=spec, mixup=0.2, cutmix=1.0), 4)
    assert isinstance(both, v2.RandomChoice)
    images, labels = torch.rand(8, 1, 12, 12), torch.arange(8) % 4
    torch.manual_seed(0)
    mixed, soft = both(images, labels)
    assert mixed.shape == images.shape and soft.shape == (8, 4)
    torch.testing.assert_close(soft.sum(1), torch.ones(8))
    torch.manual_seed(0)
    again, soft_again = both(images, labels)  # the seeded RNG repeats the draws (resume)
    assert torch.equal(again, mixed) and torch.equal(soft_again, soft)


def test_max_norm_projects_only_the_rows_outside_the_ball_after_each_step():
    weight = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 2.0]])  # norms 5, 0.5, 2
    project_rows(weight, 1.0)
    torch.testing.assert_close(weight, torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 1.0]]))
    fc = nn.Linear(3, 4)
    cfg = TrainConfig(data=DatasetSpec(name="synthetic"), lr=10.0, max_norm=0.25)
    optimizer = make_optimizer(cfg, fc.parameters(), classifier=fc)
    fc(torch.randn(5, 3)).pow(2).sum().backward()
    optimizer.step()
    assert fc.weight.norm(dim=1).max().item() <= 0.25 + 1e-6
    unbounded = nn.Linear(3, 4)
    unbounded.load_state_dict(fc.state_dict())
    make_optimizer(TrainConfig(data=DatasetSpec(name="synthetic"), lr=10.0), unbounded.parameters(),
                   classifier=unbounded)  # without max_norm no hook
    assert torch.equal(unbounded.weight, fc.weight)


def test_adamw_decouples_weight_decay_and_takes_momentum_as_beta1():
    fc = nn.Linear(3, 2)
    cfg = TrainConfig(data=DatasetSpec(name="synthetic"), optimizer="adamw", lr=1e-3, momentum=0.8,
                      weight_decay=0.05)
    optimizer = make_optimizer(cfg, fc.parameters(), classifier=fc)
    assert isinstance(optimizer, torch.optim.AdamW)
    group = optimizer.param_groups[0]
    assert group["betas"] == (0.8, 0.999) and group["weight_decay"] == 0.05 and group["lr"] == 1e-3
    sgd = make_optimizer(TrainConfig(data=DatasetSpec(name="synthetic")), fc.parameters(), classifier=fc)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["weight_decay"] == 5e-4


def test_default_out_names_the_recipe():
    spec = DatasetSpec(name="fashion-mnist-lt")
    assert default_out(TrainConfig(data=spec)).name == "backbone-resnet32-ce-s0.pt"
    cfg = TrainConfig(data=spec, mixup=0.2, augment_policy="randaugment", weight_decay=5e-3)
    assert default_out(cfg).name == "backbone-resnet32-ce-wd0.005-mixup0.2-randaugment-s0.pt"


RESUMED = [*TINY, "--epochs", "2", "--seed", "2", "--mixup", "0.3", "--cutmix", "1.0",
           "--augment-policy", "randaugment", "--optimizer", "adamw", "--lr", "1e-3", "--max-norm", "1.5",
           "--label-smoothing", "0.1"]


def test_a_recipe_run_resumes_to_the_same_weights_and_another_recipe_is_refused(tmp_path, monkeypatch):
    import ltkit.train as train_module

    ref = tmp_path / "ref.pt"
    assert run_cli("train-backbone", *RESUMED, "--out", str(ref)).exit_code == 0
    real_epoch = train_module.train_one_epoch

    def interrupted(*a, **kw):
        if a[6] == 1:  # the epoch argument
            raise KeyboardInterrupt
        return real_epoch(*a, **kw)

    out = tmp_path / "b.pt"
    monkeypatch.setattr(train_module, "train_one_epoch", interrupted)
    assert run_cli("train-backbone", *RESUMED, "--out", str(out)).exit_code == 130
    monkeypatch.setattr(train_module, "train_one_epoch", real_epoch)
    partial = tmp_path / "b.pt.partial"
    assert _flat(torch.load(partial, weights_only=True)["config"])["mixup"] == 0.3  # the partial records it
    other = run_cli("train-backbone", *RESUMED, "--mixup", "0.2", "--augment-policy", "autoaugment",
                    "--out", str(out))
    assert other.exit_code == 2 and "other options (augment_policy, mixup)" in other.stderr
    resumed = run_cli("train-backbone", *RESUMED, "--out", str(out))
    assert resumed.exit_code == 0 and "resuming" in resumed.stderr, resumed.stderr
    a, b = (torch.load(p, weights_only=True)["model_state"] for p in (ref, out))
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert b["fc.weight"].norm(dim=1).max() <= 1.5 + 1e-5  # MaxNorm held to the end


NEW_OPTIONS = ("optimizer", "max_norm", "mixup", "cutmix", "augment_policy")


def without_recipe_options(ckpt: dict) -> dict:
    """`ckpt` as ltkit wrote it before the recipe options (none of their keys in its config)."""
    config = {k: v for k, v in ckpt["config"].items() if k not in NEW_OPTIONS}
    config["loss_options"] = {k: v for k, v in config["loss_options"].items() if k != "label_smoothing"}
    return ckpt | {"config": config}


def test_checkpoints_and_resume_states_from_before_the_recipes_still_load_and_resume(tmp_path, monkeypatch):
    import ltkit.train as train_module

    ref = tmp_path / "ref.pt"
    assert run_cli("train-backbone", *TINY, "--epochs", "2", "--out", str(ref)).exit_code == 0
    torch.save(without_recipe_options(torch.load(ref, weights_only=True)), ref)
    again = run_cli("train-backbone", *TINY, "--epochs", "2", "--out", str(ref))
    assert again.exit_code == 0 and "reusing" in again.stderr  # made with what are now the defaults
    mixed = run_cli("train-backbone", *TINY, "--epochs", "2", "--mixup", "0.2", "--out", str(ref))
    assert mixed.exit_code == 2 and "other options (mixup)" in mixed.stderr
    real_epoch = train_module.train_one_epoch

    def interrupted(*a, **kw):
        if a[6] == 1:
            raise KeyboardInterrupt
        return real_epoch(*a, **kw)

    out = tmp_path / "b.pt"
    monkeypatch.setattr(train_module, "train_one_epoch", interrupted)
    assert run_cli("train-backbone", *TINY, "--epochs", "2", "--out", str(out)).exit_code == 130
    monkeypatch.setattr(train_module, "train_one_epoch", real_epoch)
    partial = tmp_path / "b.pt.partial"
    torch.save(without_recipe_options(torch.load(partial, weights_only=True)), partial)
    resumed = run_cli("train-backbone", *TINY, "--epochs", "2", "--out", str(out))
    assert resumed.exit_code == 0 and "resuming" in resumed.stderr, resumed.stderr
    a, b = (torch.load(p, weights_only=True)["model_state"] for p in (ref, out))
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_config_errors_come_from_the_library_too():
    with pytest.raises(ConfigError, match="--mixup is a Beta"):
        TrainConfig(data=DatasetSpec(name="synthetic"), mixup=-1.0).validate()
