"""Backbones: every registered name is held to the same contract on tiny inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ltkit.errors import ArtifactError, ConfigError
from ltkit.models import MODELS, NormedLinear, create_model
from ltkit.models.resnet_cifar import PadShortcut

ARCHS = MODELS.names()
K = 5  # classes in every test model


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Seeded, and one intra-op thread: on 2 shared cores, more threads only contend."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _images(channels: int, size: int = 16) -> torch.Tensor:
    """Two small random images; 16x16 keeps ResNet-34/50 cheap on shared CPUs."""
    return torch.randn(2, channels, size, size)  # (B, C, H, W)


def test_registry_holds_the_documented_backbones():
    assert {"resnet32", "resnet18-cifar", "resnet34-cifar", "resnet18", "resnet34",
            "resnet50"} <= set(ARCHS)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("channels", [1, 3])
def test_forward_shapes_and_pooling(arch, channels):
    model = create_model(arch, K, channels).eval()
    x = _images(channels)
    with torch.no_grad():
        fmap = model.forward_features(x)  # (B, C, h, w)
        pooled = model.forward_head(fmap, pre_logits=True)  # (B, C)
        logits = model(x)  # (B, K)
    assert fmap.dim() == 4 and fmap.shape[:2] == (2, model.feature_dim)
    # CIFAR nets: 16 -> 4 (ResNet-32, two stride-2 stages) or 2 (three); ImageNet nets: stride 32
    expected_side = {"resnet32": 4, "resnet18-cifar": 2, "resnet34-cifar": 2}.get(arch, 1)
    assert fmap.shape[2:] == (expected_side, expected_side)
    torch.testing.assert_close(pooled, fmap.mean(dim=(2, 3)))
    assert logits.shape == (2, K)
    # the linear head is the only thing between the pooled feature and the logits
    torch.testing.assert_close(logits, pooled @ model.fc.weight.T + model.fc.bias)


@pytest.mark.parametrize("arch", ARCHS)
def test_cosine_head_formula(arch):
    model = create_model(arch, K, 3, head="cosine").eval()
    assert isinstance(model.fc, NormedLinear) and model.fc.bias is None
    assert model.fc.weight.shape == (K, model.feature_dim) and model.fc.scale == 30.0
    x = _images(3)
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)  # (B, C)
        logits = model(x)  # (B, K)
    w = model.fc.weight.detach()
    cosines = torch.stack([torch.stack([p.dot(wk) / (p.norm() * wk.norm()) for wk in w])
                           for p in pooled])  # (B, K), one dot product at a time
    torch.testing.assert_close(logits, 30.0 * cosines)
    assert logits.abs().max() <= 30.0 + 1e-4


@pytest.mark.parametrize("arch", ["resnet32", "resnet18"])
def test_channels_last_gives_the_same_output(arch):
    model = create_model(arch, K, 3).eval()
    x = _images(3)
    with torch.no_grad():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last)
        result = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(result, reference, rtol=1e-4, atol=1e-4)


def test_resnet32_is_the_ldam_network():
    model = create_model("resnet32", 10, 3)
    params = sum(p.numel() for p in model.parameters())
    assert 0.46e6 < params < 0.47e6  # the 0.46M of He et al.'s CIFAR ResNet-32
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 31 and all(c.kernel_size == (3, 3) for c in convs)  # + fc = 32 layers
    shortcuts = [m for m in model.modules() if isinstance(m, PadShortcut)]
    assert len(shortcuts) == 2 and model.feature_dim == 64


def test_option_a_shortcut_subsamples_and_zero_pads():
    x = torch.randn(2, 16, 8, 8)
    out = PadShortcut(16, 32, stride=2)(x)  # (2, 32, 4, 4)
    assert out.shape == (2, 32, 4, 4)
    torch.testing.assert_close(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


@pytest.mark.parametrize("arch", ARCHS)
def test_pretrained_three_channel_weights_load_into_a_grey_model(arch, tmp_path):
    colour = create_model(arch, K, 3).eval()
    path = tmp_path / "weights.pt"
    torch.save(colour.state_dict(), path)
    grey = create_model(arch, K, 1, pretrained=str(path)).eval()
    x = _images(1)
    with torch.no_grad():
        # a summed stem on a grey image == the colour net on that image in all 3 channels
        torch.testing.assert_close(grey(x), colour(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-4)


def test_pretrained_with_another_class_count_keeps_a_fresh_fc(tmp_path, capsys):
    source = create_model("resnet18", 1000, 3)
    path = tmp_path / "imagenet.pth"
    torch.save(source.state_dict(), path)
    model = create_model("resnet18", K, 3, pretrained=str(path))
    assert "does not fit" in capsys.readouterr().err
    torch.testing.assert_close(model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert model.fc.weight.shape == (K, 512)


def test_pretrained_linear_fc_is_not_loaded_into_a_cosine_head(tmp_path, capsys):
    path = tmp_path / "w.pt"
    torch.save(create_model("resnet32", K, 3).state_dict(), path)
    model = create_model("resnet32", K, 3, head="cosine", pretrained=str(path))
    assert "does not fit" in capsys.readouterr().err
    assert isinstance(model.fc, NormedLinear)


def test_pretrained_accepts_wrapped_and_ddp_state_dicts(tmp_path):
    source = create_model("resnet32", K, 3)
    path = tmp_path / "w.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    model = create_model("resnet32", K, 3, pretrained=str(path))
    torch.testing.assert_close(model.fc.weight, source.fc.weight)


def test_pretrained_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        create_model("resnet18", K, 3, pretrained=str(tmp_path / "missing.pt"))
    foreign = tmp_path / "foreign.pt"
    torch.save(create_model("resnet32", K, 3).state_dict(), foreign)
    with pytest.raises(ArtifactError, match="do not fit resnet18"):
        create_model("resnet18", K, 3, pretrained=str(foreign))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ArtifactError, match="cannot read"):
        create_model("resnet32", K, 3, pretrained=str(junk))


def test_bad_names_and_sizes_raise_config_errors():
    with pytest.raises(ConfigError, match="resnet32") as info:
        create_model("vgg16", K, 3)
    assert all(name in str(info.value) for name in ARCHS)
    with pytest.raises(ConfigError, match="cosine, linear"):
        create_model("resnet32", K, 3, head="mlp")
    with pytest.raises(ConfigError, match="in_channels"):
        create_model("resnet32", K, 4)
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("resnet32", 0, 3)


def test_normed_linear_matches_functional_form():
    layer = NormedLinear(4, 3, scale=2.0)
    x = torch.randn(5, 4)
    expected = 2.0 * F.normalize(x, dim=1) @ F.normalize(layer.weight, dim=1).T
    torch.testing.assert_close(layer(x), expected)
