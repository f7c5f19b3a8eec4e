"""`--arch timm/<name>`: any timm CNN as a backbone, on tiny data (needs the `timm` extra)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from ltkit.cli import app
from ltkit.errors import ConfigError
from ltkit.models import create_model

timm = pytest.importorskip("timm")

TINY = ["--data", "synthetic", "--num-classes", "4", "--n-max", "30", "--imbalance", "3", "--val-per-class", "3",
        "--image-size", "32", "--batch-size", "32", "--epochs", "1", "--device", "cpu", "--quiet"]


def test_a_timm_cnn_follows_the_backbone_contract():
    model = create_model("timm/resnet10t", 5, 1, head="linear").eval()  # grey input: timm's in_chans=1
    x = torch.randn(2, 1, 64, 64)
    fmap = model.forward_features(x)  # (B, C, h, w)
    assert fmap.dim() == 4 and fmap.shape[1] == model.feature_dim == model.fc.in_features
    assert torch.allclose(model(x), model.fc(fmap.mean((2, 3))), atol=1e-5)  # pooling + one linear layer
    cosine = create_model("timm/resnet10t", 5, 3, head="cosine")
    assert cosine.fc.weight.shape == (5, cosine.feature_dim)


def test_train_extract_evaluate_with_a_timm_backbone_and_local_pretrained_weights(tmp_path):
    weights = tmp_path / "resnet10t.pth"
    torch.save(timm.create_model("resnet10t").state_dict(), weights)  # a local weights file, as a user has
    run = CliRunner().invoke
    done = run(app, ["train-backbone", *TINY, "--arch", "timm/resnet10t", "--pretrained", str(weights),
                     "--out", str(tmp_path / "bb.pt")])
    assert done.exit_code == 0, done.stderr
    ckpt = torch.load(tmp_path / "bb.pt", weights_only=True)
    assert ckpt["arch"] == "timm/resnet10t"
    assert "body.conv1.0.weight" in ckpt["model_state"] and "fc.weight" in ckpt["model_state"]
    assert run(app, ["extract", str(tmp_path / "bb.pt"), "--out", str(tmp_path / "s.h5"), "--device", "cpu",
                     "--quiet"]).exit_code == 0
    evaluated = run(app, ["evaluate", str(tmp_path / "s.h5"), "--device", "cpu", "--quiet"])
    assert evaluated.exit_code == 0, evaluated.stderr


def test_local_pretrained_weights_are_loaded_also_for_grey_images(tmp_path):
    weights = tmp_path / "w.pth"
    state = timm.create_model("resnet10t").state_dict()
    torch.save(state, weights)
    model = create_model("timm/resnet10t", 4, 1, pretrained=str(weights))
    loaded = model.state_dict()
    grey_stem = state["conv1.0.weight"].sum(1, keepdim=True)  # timm's adaptation to one channel
    assert torch.allclose(loaded["body.conv1.0.weight"], grey_stem)
    assert torch.equal(loaded["body.layer4.0.conv2.weight"], state["layer4.0.conv2.weight"])
    assert loaded["fc.weight"].shape == (4, model.feature_dim)  # a fresh head for the 4 classes


@pytest.mark.parametrize("arch, needle", [
    ("timm/vit_tiny_patch16_224", "tokens, not a (C, H, W) map"),
    ("timm/resnet_nope", "timm has no model 'resnet_nope'"),
])
def test_models_without_a_map_and_unknown_names_are_refused(arch, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        create_model(arch, 4, 3)
