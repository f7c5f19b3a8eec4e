"""FSA on maps (`ltkit.augment.fsa_maps`) against the rule written in its docstring, with
identifiable location vectors, and the spatial head's shapes and start."""

from __future__ import annotations

import pytest
import torch

from ltkit.augment.fsa_maps import mix_locations
from ltkit.errors import ConfigError
from ltkit.spatial_head import ConvBlock, SeparableBlock, SpatialHead, SpatialHeadConfig

TAU_S, TAU_G = 0.5, 0.3


def _case(a: int = 64, length: int = 9, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tail_cams, conf_cams = torch.rand(a, length, generator=g), torch.rand(a, length, generator=g)
    tail_nz = torch.rand(a, length, generator=g) > 0.1
    conf_nz = torch.rand(a, length, generator=g) > 0.1
    gamma = torch.rand(a, generator=g)
    return tail_cams, tail_nz, conf_cams, conf_nz, gamma


def test_kept_locations_are_specific_in_place_and_the_rest_generic():
    tail_cams, tail_nz, conf_cams, conf_nz, gamma = _case()
    keep, loc = mix_locations(tail_cams, tail_nz, conf_cams, conf_nz, TAU_S, TAU_G, gamma,
                              torch.Generator().manual_seed(1))
    L = tail_cams.shape[1]
    for i in range(len(keep)):
        if not tail_nz[i].any() or not conf_nz[i].any():
            continue
        spec = (tail_cams[i] > TAU_S) & tail_nz[i]
        if spec.any():
            assert bool((keep[i] <= spec).all())  # only specific locations are kept
            top = tail_cams[i].masked_fill(~spec, -1).argmax()
            assert bool(keep[i, top])  # the most specific one always
        assert bool((loc[i][keep[i]] == torch.arange(L)[keep[i]]).all())  # in place
        gen = (conf_cams[i] < TAU_G) & conf_nz[i]
        filled = ~keep[i]
        if gen.any():
            assert bool(gen[loc[i][filled]].all())  # every fill is a generic location
            same = filled & gen  # a generic position is filled by the same position
            assert bool((loc[i][same] == torch.arange(L)[same]).all())
        assert bool(conf_nz[i][loc[i][filled]].all())  # never an all-zero vector


def test_gamma_sets_the_share_of_kept_specific_locations():
    tail_cams = torch.full((2000, 16), 0.9)  # every location specific
    nz = torch.ones(2000, 16, dtype=torch.bool)
    conf_cams = torch.full((2000, 16), 0.1)  # every location generic
    for gamma in (0.0, 0.25, 1.0):
        keep, _ = mix_locations(tail_cams, nz, conf_cams, nz, TAU_S, TAU_G, torch.full((2000,), gamma),
                                torch.Generator().manual_seed(0))
        share = keep.float().sum(1).mean().item() / 16
        expected = 1 / 16 + gamma * 15 / 16  # the top location, and each other with prob. gamma
        assert share == pytest.approx(expected, abs=0.01)


def test_empty_maps_follow_the_fsa_rules():
    L = 4
    cams = torch.tensor([[0.9, 0.8, 0.2, 0.1]])
    nz, zeros = torch.ones(1, L, dtype=torch.bool), torch.zeros(1, L, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    keep, loc = mix_locations(cams, nz, cams, zeros, TAU_S, TAU_G, torch.ones(1), g)
    assert keep.all() and (loc == torch.arange(L)).all()  # a confusing map of zeros: the tail map
    keep, loc = mix_locations(cams, zeros, cams, nz, TAU_S, TAU_G, torch.ones(1), g)
    assert not keep.any()  # a tail map of zeros: purely generic, from the confusing map
    assert set(loc[0].tolist()) <= {2, 3} and loc[0, 2:].tolist() == [2, 3]  # its generic locations (CAM < 0.3)
    no_spec = torch.tensor([[0.4, 0.45, 0.2, 0.1]])  # nothing past tau_s: the highest CAM is used
    keep, _ = mix_locations(no_spec, nz, cams, nz, TAU_S, TAU_G, torch.zeros(1), g)
    assert keep[0].tolist() == [False, True, False, False]


def test_same_generator_same_mix():
    args = _case(seed=3)
    a = mix_locations(*args[:4], TAU_S, TAU_G, args[4], torch.Generator().manual_seed(7))
    b = mix_locations(*args[:4], TAU_S, TAU_G, args[4], torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("block", ["conv", "separable"])
@pytest.mark.parametrize("depth, width", [(0, 0), (1, 0), (2, 32)])
def test_spatial_head_shapes_and_a_fresh_head_is_the_linear_head_on_the_mean(depth, width, block):
    torch.manual_seed(0)
    head = SpatialHead(8, 5, SpatialHeadConfig(depth=depth, width=width, block=block)).eval()
    maps = torch.randn(3, 8, 4, 4).relu()  # (B, C, H, W), post-ReLU like a backbone's maps
    assert head(maps).shape == (3, 5)
    if width == 0:  # residual blocks, last BN at zero: the head starts as fc(mean of the map)
        assert torch.allclose(head(maps), head.fc(maps.mean((2, 3))), atol=1e-5)


def test_a_separable_block_is_a_depthwise_conv_then_a_1x1_in_about_a_ninth_of_the_weights():
    conv, separable = ConvBlock(64, 128, 3, zero_init=False), SeparableBlock(64, 128, 3, zero_init=False)
    assert separable.depthwise.groups == 64 and separable.conv.kernel_size == (1, 1)
    weights = [sum(c.weight.numel() for c in block.convs()) for block in (conv, separable)]
    assert weights == [64 * 128 * 9, 64 * 9 + 64 * 128]  # 73,728 against 8,768
    x = torch.randn(2, 64, 7, 7)
    with torch.no_grad():  # the same as its two convs by hand
        expected = torch.relu(separable.bn.eval()(separable.conv(separable.depthwise(x))))
        assert torch.equal(separable.eval()(x), expected)


def test_a_head_of_before_without_a_block_name_loads_as_full_conv_blocks():
    head = SpatialHead(8, 5, SpatialHeadConfig(depth=2, width=16, block="conv"))
    state = head.head_state()
    del state["config"]["block"]  # what an artifact of before kept
    again = SpatialHead.from_head_state(head.fc, state).eval()
    assert all(type(block) is ConvBlock for block in again.blocks)
    maps = torch.randn(3, 8, 4, 4)
    assert torch.equal(again(maps), head.eval()(maps))


def test_spatial_head_config_bounds():
    for bad in (SpatialHeadConfig(depth=-1), SpatialHeadConfig(depth=9), SpatialHeadConfig(width=-1),
                SpatialHeadConfig(kernel=2), SpatialHeadConfig(block="dense")):
        with pytest.raises(ConfigError):
            bad.validate()
