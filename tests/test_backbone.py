"""Dilated ResNet: declared strides/channels, the official dilation pattern, attention placement."""

from __future__ import annotations

import pytest
import torch

from models.backbones import ResNet, resolve_placement
from models.modules import SelectiveKernelConv, StripPooling


def _conv2_dilations(stage):
    return [block.conv2.dilation[0] if hasattr(block, "conv3") else block.conv1.dilation[0] for block in stage]


@pytest.mark.parametrize("depth, blocks", [(18, (1, 1, 1, 2)), (50, (1, 1, 2, 3))])
@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("deep_stem", [True, False])
def test_declared_strides_and_channels_match_outputs(depth, blocks, output_stride, deep_stem):
    backbone = ResNet(
        depth,
        stage_blocks=blocks,
        base_width=8,
        deep_stem=deep_stem,
        output_stride=output_stride,
        multi_grid=None,
        attention=StripPooling,
    )
    x = torch.randn(1, 3, 97, 129)
    features = backbone(x)
    assert len(features) == len(backbone.strides) == len(backbone.out_channels) == 4
    for feature, stride, channels in zip(features, backbone.strides, backbone.out_channels):
        assert feature.shape[1] == channels
        # conv arithmetic: each stride-2 layer maps n -> ceil(n / 2)
        assert feature.shape[-2:] == (-(-97 // stride), -(-129 // stride))
    assert backbone.strides == {8: (4, 8, 8, 8), 16: (4, 8, 16, 16), 32: (4, 8, 16, 32)}[output_stride]
    expansion = 4 if depth == 50 else 1
    assert backbone.out_channels == tuple(8 * expansion * m for m in (1, 2, 4, 8))


def test_official_dilation_pattern_r50_and_r101():
    with torch.device("meta"):
        for depth, n3 in ((50, 6), (101, 23)):
            r = ResNet(depth, output_stride=8, multi_grid=(1, 2, 4))
            assert _conv2_dilations(r.layer3) == [1] + [2] * (n3 - 1)  # first block of stage 3: dilation 1
            assert _conv2_dilations(r.layer4) == [4, 8, 16]  # multi-grid
            assert [b.conv2.stride[0] for b in r.layer2] == [2, 1, 1, 1]
            assert all(b.conv2.stride[0] == 1 for b in (*r.layer3, *r.layer4))
            assert r.layer3[0].downsample[0].stride == (1, 1)


def test_output_stride_16_and_torchvision_rule_without_multi_grid():
    with torch.device("meta"):
        r = ResNet(50, output_stride=16, multi_grid=(1, 2, 4))
        assert _conv2_dilations(r.layer3) == [1] * 6 and r.layer3[0].conv2.stride == (2, 2)
        assert _conv2_dilations(r.layer4) == [2, 4, 8]
        r = ResNet(50, output_stride=8, multi_grid=None)
        assert _conv2_dilations(r.layer4) == [2, 4, 4]  # torchvision: first block keeps the previous dilation


def test_official_spm_placement_r50_and_r101():
    with torch.device("meta"):
        for depth, expected in (
            (50, ["layer1.2", "layer2.3", "layer3.5", "layer4.0", "layer4.1", "layer4.2"]),
            (101, ["layer1.2", "layer2.3", "layer3.22", "layer4.0", "layer4.1", "layer4.2"]),
        ):
            r = ResNet(depth, attention=StripPooling)
            found = [name.removesuffix(".attention") for name, m in r.named_modules() if isinstance(m, StripPooling)]
            assert found == expected
            # SPM works on the block's inner width (planes), no channel reduction
            assert [r.get_submodule(n).attention.conv_h.in_channels for n in found] == [64, 128, 256, 512, 512, 512]


def test_placement_presets_and_lists():
    blocks = (3, 4, 6, 3)
    assert resolve_placement("official", blocks) == [{2}, {3}, {5}, {0, 1, 2}]
    assert resolve_placement("last", blocks) == [{2}, {3}, {5}, {2}]
    assert resolve_placement("all", blocks)[2] == set(range(6))
    assert resolve_placement("none", blocks) == [set()] * 4
    assert resolve_placement([[0, -1], [], [], [1]], blocks) == [{0, 2}, set(), set(), {1}]
    with pytest.raises(ValueError, match="stage 2 has 4 blocks, block indices \\[4\\]"):
        resolve_placement([[], [4], [], []], blocks)
    with pytest.raises(ValueError, match="unknown attention_placement 'offical'"):
        resolve_placement("offical", blocks)


def test_attention_position_post_uses_expanded_width():
    r = ResNet(
        50,
        stage_blocks=(1, 1, 1, 1),
        base_width=8,
        multi_grid=None,
        attention=StripPooling,
        attention_placement="all",
        attention_position="post",
    )
    assert r.layer1[0].attention.conv_h.in_channels == 32  # planes * 4
    assert r(torch.randn(1, 3, 33, 47))[-1].shape == (1, 256, 5, 6)


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="multi_grid \\[1, 2, 4\\] needs one entry per block of stage 4, which has 2"):
        ResNet(18, multi_grid=(1, 2, 4))
    with pytest.raises(ValueError, match="output_stride must be 8, 16 or 32"):
        ResNet(50, output_stride=4)
    with pytest.raises(ValueError, match="unknown ResNet depth 51"):
        ResNet(51)
    with pytest.raises(ValueError, match=r"attention_position must be one of \['mid', 'post', 'out'\], got 'pre'"):
        ResNet(50, attention_position="pre")
    with pytest.raises(ValueError, match="unknown block_conv_placement 'lsat'"):
        ResNet(50, block_conv=SelectiveKernelConv, block_conv_placement="lsat")


def test_official_initialisation():
    r = ResNet(
        50, stage_blocks=(1, 1, 1, 1), base_width=16, multi_grid=None, attention=StripPooling, attention_placement="all"
    )
    w = r.layer4[0].conv2.weight  # He normal, fan_out = 128 * 9
    assert abs(w.std().item() - (2 / (128 * 9)) ** 0.5) < 0.1 * (2 / (128 * 9)) ** 0.5
    assert torch.equal(r.layer4[0].bn3.weight, torch.ones(512)) and torch.equal(r.bn1.bias, torch.zeros(32))


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_every_depth_builds_with_the_declared_outputs(depth):
    """Full-size models on the meta device: shapes propagate without memory or compute."""
    with torch.device("meta"):
        blocks = 2 if depth == 18 else 3
        backbone = ResNet(depth, multi_grid=[1, 2, 4][:blocks], attention=StripPooling)
        features = backbone(torch.empty(1, 3, 65, 97))
    assert [f.shape[1] for f in features] == list(backbone.out_channels)
    assert all(f.shape[-2:] == (9, 13) for f in features[1:])  # output stride 8
    assert len(backbone.blocks()) == sum(backbone.stage_blocks)
