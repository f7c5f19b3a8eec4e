"""``--augment h2t``: Li et al.'s head-to-tail fusion on pooled features against a hand
computation, the ``instance`` sampler, and the fusion ratio chosen on validation."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from ltkit.augment import AugmentConfig, bank_from_tensors, make_augmenter
from ltkit.classifiers import load_classifier
from ltkit.cli import app
from ltkit.errors import ConfigError
from storefixtures import make_store

COUNTS = [40, 10, 2]


def numbered_bank(channels: int = 20):
    """Image n's feature is n + 1 in every channel: each fused channel names the image it came from."""
    labels = torch.repeat_interleave(torch.arange(3), torch.tensor(COUNTS))  # (N,)
    pooled = (torch.arange(len(labels), dtype=torch.float32) + 1)[:, None].repeat(1, channels)  # (N, C)
    return bank_from_tensors(labels=labels, pooled=pooled, head_classes=[0], tail_classes=[1, 2],
                             confusing=[[0], [0]], num_classes=3)


def test_a_share_of_channels_comes_from_another_image_and_the_balanced_label_is_kept():
    bank = numbered_bank()
    aug = make_augmenter("h2t", bank, AugmentConfig(batch_size=3000, fusion_ratio=0.25))
    x, y = aug.batch(torch.Generator().manual_seed(0))
    own = x.mode(dim=1).values  # (B,) the balanced image: 15 of its 20 channels
    donor_channels = x != own[:, None]  # (B, C)
    assert torch.equal(bank.labels[own.long() - 1], y)  # the label is the balanced image's
    # the same 5 channels (int(0.25 * 20)) come from the instance draw in every row (one set per batch)
    fused = donor_channels.any(0)
    assert int(fused.sum()) == 5 and bool((x[:, ~fused] == own[:, None]).all())
    donors = x[:, fused][:, 0].long() - 1  # (B,) the instance-drawn image of each row
    share = torch.bincount(bank.labels[donors], minlength=3).float() / len(donors)
    assert torch.allclose(share, torch.tensor(COUNTS) / sum(COUNTS), atol=0.03)  # instance sampling
    assert torch.allclose(torch.bincount(y, minlength=3).float() / len(y), torch.full((3,), 1 / 3), atol=0.03)


def test_instance_sampling_follows_the_training_distribution():
    bank = numbered_bank()
    _, y = make_augmenter("instance", bank, AugmentConfig(batch_size=6000)).batch(torch.Generator().manual_seed(1))
    assert torch.allclose(torch.bincount(y, minlength=3).float() / 6000, torch.tensor(COUNTS) / 52, atol=0.03)


def test_the_ratio_must_be_chosen_or_given_and_lie_in_the_open_interval():
    with pytest.raises(ConfigError, match="fusion_ratio still auto"):
        make_augmenter("h2t", numbered_bank(), AugmentConfig(batch_size=8, fusion_ratio="auto"))
    with pytest.raises(ConfigError, match="--fusion-ratio must lie strictly between 0 and 1"):
        AugmentConfig(fusion_ratio=1.0).validate()


def test_auto_chooses_the_ratio_on_validation(tmp_path):
    store = make_store(tmp_path / "s.h5")
    out = tmp_path / "h2t.pt"
    done = CliRunner().invoke(app, ["augment-finetune", str(store), "--augment", "h2t", "--classifier", "crt",
                                    "--iterations", "20", "--batch-size", "32", "--device", "cpu", "--quiet",
                                    "--out", str(out)])
    assert done.exit_code == 0, done.stderr
    _, meta = load_classifier(out)
    grid = meta["options"]["auto_choice"]  # every point tried, with its validation accuracy
    assert [row["fusion_ratio"] for row in grid] == [0.25, 0.1, 0.4]
    best = max(row["val_acc"] for row in grid)
    assert meta["options"]["fusion_ratio"] == next(r["fusion_ratio"] for r in grid if r["val_acc"] == best)
    assert meta["method"] == "h2t-crt"
