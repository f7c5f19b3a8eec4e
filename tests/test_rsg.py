"""RSG: head classes, pairing, generated samples (tail labels, shapes, values), its losses on
hand-made maps, what trains what, and that the module disappears at inference."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ltkit.errors import ConfigError
from ltkit.models import MODELS, create_model
from ltkit.rsg import RSG, contrast_pairs, head_classes
from ltkit.training_net import TrainingNet, stage_channels

K, C, H = 4, 8, 4  # classes, channels, map side of the hand-made maps


def _rsg(**kw) -> RSG:
    torch.manual_seed(0)
    opts = dict(n_centers=3, contrastive_dim=6, strength=1.0, start_epoch=2)
    return RSG(K, C, [0, 1], **{**opts, **kw})


def test_head_classes_are_the_largest_and_leave_a_tail():
    assert head_classes([5, 40, 10, 30], 0.5) == [1, 3]
    assert head_classes([5, 40, 10, 30], 0.2) == [1]  # at least one head class
    assert head_classes([9] * 10, 0.2) == [0, 1]  # int(0.2 K), ties by index (the reference)
    with pytest.raises(ConfigError, match="tail"):
        head_classes([7], 0.5)
    with pytest.raises(ConfigError, match="head-ratio"):
        head_classes([5, 4], 1.0)


def test_pairs_cycle_the_smaller_side_by_strength():
    rsg = _rsg()
    targets = torch.tensor([0, 2, 1, 0, 3, 1, 0, 1])  # head rows 0,2,3,5,6,7; tail rows 1,4
    head, tail = rsg.pairs(targets)
    assert head.tolist() == [0, 2, 3, 5, 6, 7] and tail.tolist() == [1, 4, 1, 4, 1, 4]
    rsg.strength = 0.5  # int(6 * 0.5 / 2) = 1 round of the two tail samples
    head, tail = rsg.pairs(targets)
    assert head.tolist() == [0, 2] and tail.tolist() == [1, 4]
    rsg.strength = 1.0
    head, tail = rsg.pairs(torch.tensor([2, 3, 0, 2, 3]))  # more tail than head
    assert head.tolist() == [2, 2, 2, 2] and tail.tolist() == [0, 1, 3, 4]
    assert rsg.pairs(torch.tensor([2, 3, 2]))[0].numel() == 0  # no head sample: nothing


def test_contrast_pairs_never_pair_an_image_with_its_other_view():
    first, second = contrast_pairs(8)  # a two-view batch of 4 images: rows i and i + 4 are one image
    assert first.tolist() == [0, 1, 2, 3] and second.tolist() == [7, 4, 5, 6]
    assert all(s - 4 != f for f, s in zip(first.tolist(), second.tolist()))
    assert contrast_pairs(1)[0].numel() == 0


def test_before_the_start_epoch_nothing_is_generated():
    rsg = _rsg()
    fmap = torch.randn(6, C, H, H)
    targets = torch.tensor([0, 2, 1, 3, 0, 1])
    out = rsg(fmap, targets, epoch=1)
    assert out.features is fmap and out.targets is targets and out.generated == 0
    assert out.mv_loss.item() == 0.0
    later = rsg(fmap, targets, epoch=2)  # the contrastive pairs stop when generation starts
    assert out.cesc_loss.item() > later.cesc_loss.item()


def test_generated_samples_carry_tail_labels_and_the_intended_shapes():
    rsg = _rsg()
    fmap = torch.randn(8, C, H, H)
    targets = torch.tensor([0, 2, 1, 0, 3, 1, 0, 1])
    out = rsg(fmap, targets, epoch=2)
    assert out.generated == 6
    assert out.features.shape == (14, C, H, H) and out.targets.shape == (14,)
    assert torch.equal(out.features[:8], fmap) and torch.equal(out.targets[:8], targets)
    assert set(out.targets[8:].tolist()) <= {2, 3}  # tail classes only
    assert out.targets[8:].tolist() == [2, 3, 2, 3, 2, 3]
    # each new sample is its tail map plus T(head map - the head map's nearest centre)
    with torch.no_grad():
        pooled = fmap.mean(dim=(2, 3))
        gamma = (torch.einsum("bc,bcn->bn", pooled, rsg.assign_weight[targets])
                 + rsg.assign_bias[targets]).softmax(1)
        nearest = rsg.centers[targets, gamma.argmax(1)]  # (8, C)
        v = fmap[0] - nearest[0][:, None, None]
        expected = fmap[1] + rsg.transform(v[None])[0]
    torch.testing.assert_close(out.features[8], expected)


def test_center_loss_is_the_weighted_squared_distance():
    rsg = _rsg()
    with torch.no_grad():
        rsg.centers.normal_()
    fmap = torch.randn(5, C, H, H)
    targets = torch.tensor([0, 1, 2, 3, 0])
    pooled = fmap.mean(dim=(2, 3))
    gamma = (torch.einsum("bc,bcn->bn", pooled, rsg.assign_weight[targets])
             + rsg.assign_bias[targets]).softmax(1)
    centers = rsg.centers[targets][:, :, :, None, None]  # (5, n, C, 1, 1)
    direct = (gamma * (fmap[:, None] - centers).pow(2).sum(dim=(2, 3, 4))).sum() / 5
    torch.testing.assert_close(rsg.center_loss(fmap, pooled, gamma, targets), direct)


def test_mv_loss_on_hand_made_maps():
    """T = identity, tail offset parallel to the head variation, a blind contrastive module:
    size and direction terms vanish and only the contrastive term, log 2, is left."""
    rsg = RSG(2, C, [0], n_centers=1, contrastive_dim=6, start_epoch=0)
    with torch.no_grad():
        nn.init.dirac_(rsg.transform.weight)
        rsg.transform.bias.zero_()
        rsg.contrastive_fc.weight.zero_()  # logits 0: "same class" and "not" equally likely
        rsg.centers[0, 0] = torch.linspace(-1, 1, C)
        rsg.centers[1, 0] = torch.linspace(2, 0, C)
    d = torch.rand(C, H, H) + 0.1  # a positive variation at every position
    f_head = rsg.centers[0, 0].detach()[:, None, None] + d
    f_tail = rsg.centers[1, 0].detach()[:, None, None] + 2 * d
    out = rsg(torch.stack([f_head, f_tail]), torch.tensor([0, 1]), epoch=0)
    assert out.generated == 1 and out.targets.tolist() == [0, 1, 1]
    assert out.mv_loss.item() == pytest.approx(math.log(2), abs=1e-5)
    torch.testing.assert_close(out.features[2], f_tail + d)


def test_rsg_losses_train_rsg_only_and_the_samples_train_the_transform():
    rsg = _rsg()
    fmap = torch.randn(8, C, H, H, requires_grad=True)
    targets = torch.tensor([0, 2, 1, 0, 3, 1, 0, 1])
    out = rsg(fmap, targets, epoch=2)
    (out.cesc_loss + out.mv_loss).backward(retain_graph=True)
    assert fmap.grad is None  # RSG's losses work on detached maps
    assert rsg.centers.grad is not None and rsg.assign_weight.grad is not None
    assert all(p.grad is None for p in rsg.contrastive.parameters())  # frozen once generating
    rsg.zero_grad(set_to_none=True)
    out.features[8:].sum().backward()  # what the later stages send back to the new samples
    assert rsg.transform.weight.grad.abs().sum() > 0
    assert fmap.grad is not None and fmap.grad.abs().sum() == 0  # built from detached maps
    rsg.zero_grad(set_to_none=True)
    rsg(fmap, targets, epoch=1).cesc_loss.backward()  # before: the contrastive module learns
    assert all(p.grad is not None for p in rsg.contrastive.parameters())


def test_a_batch_without_head_samples_generates_nothing_but_runs_the_same_path():
    rsg = _rsg()
    out = rsg(torch.randn(3, C, H, H), torch.tensor([2, 3, 2]), epoch=5)
    assert out.generated == 0 and out.features.shape == (3, C, H, H)
    assert out.mv_loss.item() == 0.0 and out.mv_loss.requires_grad  # same graph on every process


@pytest.mark.parametrize("arch", MODELS.names())
def test_every_backbone_runs_stage_by_stage(arch):
    torch.manual_seed(0)
    model = create_model(arch, 3, 3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        whole = model.forward_features(x)
        for stage in range(model.num_stages + 1):
            torch.testing.assert_close(model.forward_from(model.forward_until(x, stage), stage), whole)
    with pytest.raises(ConfigError, match="stage"):
        model.forward_until(x, model.num_stages + 1)


def test_rsg_disappears_at_inference():
    torch.manual_seed(0)
    backbone = create_model("resnet32", K, 3, head="cosine")
    channels = stage_channels(backbone, 2, 3, 16)
    assert channels == 32
    net = TrainingNet(backbone, rsg=RSG(K, channels, [0], n_centers=2, contrastive_dim=4,
                                        start_epoch=0), rsg_stage=2)
    images, targets = torch.randn(6, 3, 16, 16), torch.tensor([0, 1, 2, 3, 0, 0])
    out = net(images, targets, epoch=0)
    assert out.generated > 0 and out.logits.shape == (6 + out.generated, K)
    plain = create_model("resnet32", K, 3, head="cosine").state_dict()
    assert backbone.state_dict().keys() == plain.keys()  # the backbone holds no RSG weight
    assert set(net.parts_state()) == {"rsg"}
    backbone.eval()
    with torch.no_grad():  # at inference the backbone is the whole model
        torch.testing.assert_close(backbone(images), backbone.forward_head(backbone.forward_features(images)))
