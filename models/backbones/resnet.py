"""Dilated ResNet for dense prediction, with pluggable attention and 3x3 convs inside the residual blocks.

Papers: He et al., "Deep Residual Learning for Image Recognition", https://arxiv.org/abs/1512.03385;
Yu & Koltun, "Multi-Scale Context Aggregation by Dilated Convolutions",
https://arxiv.org/abs/1511.07122; the deep stem and multi-grid dilations of SPNet/PyTorch-Encoding
("ResNet-D8 / V1c"), https://arxiv.org/abs/1706.05587.

Parameter names follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv2`` ...); the deep stem is a
``conv1`` Sequential as in PyTorch-Encoding. So torchvision and PyTorch-Encoding ImageNet weights
load by name, and only the ImageNet classifier ``fc`` is dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..recompute import recomputed, should_recompute

NormLayer = Callable[[int], nn.Module]
AttentionFactory = Callable[[int], nn.Module]  # channels -> module
ConvFactory = Callable[..., nn.Module]  # (in_channels, out_channels, *, stride, dilation) -> module
POSITIONS = ("mid", "post", "out")


class BasicBlock(nn.Module):
    """Two 3x3 convs. Dilated stages dilate both convs; "mid" attention sits between them.

    A ``conv`` factory replaces the second 3x3 conv (the one without stride: planes -> planes).
    """

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        planes: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
        attention: AttentionFactory | None = None,
        attention_position: str = "mid",
        conv: ConvFactory | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2, self.bn2 = _conv3x3(conv, planes, planes, 1, dilation, norm_layer)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.attention_position = attention_position
        self.attention = _make_attention(attention, attention_position, planes, planes * self.expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        if self.attention is not None and self.attention_position == "mid":
            out = self.attention(out)
        out = self.bn2(self.conv2(out))
        if self.attention is not None and self.attention_position == "post":
            out = self.attention(out)
        out = self.relu(out + identity)
        if self.attention is not None and self.attention_position == "out":
            out = self.attention(out)
        return out


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided / dilated), 1x1 expand. "mid" attention acts before the expand.

    "mid" is where SPNet puts its strip pooling (after conv2+BN+ReLU); "post" is where SE-Net,
    CBAM and GCNet put theirs (after the last norm, before the residual add); "out" acts on the
    block's output (after the add and ReLU), which in a stage's last block is BAM's stage boundary.
    A ``conv`` factory replaces the 3x3 conv (SK, Split-Attention, ACNet, MixConv, DW-separable).
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
        attention: AttentionFactory | None = None,
        attention_position: str = "mid",
        conv: ConvFactory | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2, self.bn2 = _conv3x3(conv, planes, planes, stride, dilation, norm_layer)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.attention_position = attention_position
        self.attention = _make_attention(attention, attention_position, planes, planes * self.expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        if self.attention is not None and self.attention_position == "mid":
            out = self.attention(out)
        out = self.bn3(self.conv3(out))
        if self.attention is not None and self.attention_position == "post":
            out = self.attention(out)
        out = self.relu(out + identity)
        if self.attention is not None and self.attention_position == "out":
            out = self.attention(out)
        return out


def _make_attention(factory: AttentionFactory | None, position: str, mid: int, post: int) -> nn.Module | None:
    if factory is None:
        return None
    return factory(mid if position == "mid" else post)


def _conv3x3(
    factory: ConvFactory | None, in_channels: int, out_channels: int, stride: int, dilation: int, norm_layer: NormLayer
) -> tuple[nn.Module, nn.Module]:
    """The block's 3x3 conv and its norm: dense, or a block conv that may normalise its own output."""
    if factory is None:
        conv = nn.Conv2d(in_channels, out_channels, 3, stride, padding=dilation, dilation=dilation, bias=False)
        return conv, norm_layer(out_channels)
    conv = factory(in_channels, out_channels, stride=stride, dilation=dilation)
    return conv, nn.Identity() if conv.normalizes_output else norm_layer(out_channels)


STAGE_BLOCKS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}

Placement = str | Sequence[Sequence[int]]


def resolve_placement(
    placement: Placement, stage_blocks: Sequence[int], name: str = "attention_placement"
) -> list[set[int]]:
    """Which blocks of each stage get attention (or a block conv), as one set of block indices per stage.

    Presets: ``official`` (SPNet: last block of stages 1-3, every block of stage 4), ``all``,
    ``last`` (last block of every stage), ``none``; or one list of block indices per stage,
    negative indices counting from the end, e.g. ``[[-1], [-1], [-1], [0, 1, 2]]``. ``name`` is
    the argument the placement came from, for the error messages.
    """
    n = list(stage_blocks)
    if isinstance(placement, str):
        presets = {
            "official": [{b - 1} for b in n[:-1]] + [set(range(n[-1]))],
            "all": [set(range(b)) for b in n],
            "last": [{b - 1} for b in n],
            "none": [set() for _ in n],
        }
        if placement not in presets:
            raise ValueError(f"unknown {name} {placement!r}; choose from {list(presets)} or give one list per stage")
        return presets[placement]
    if len(placement) != len(n):
        raise ValueError(f"{name} needs one list of block indices per stage ({len(n)}), got {len(placement)}")
    resolved = []
    for stage, (indices, blocks) in enumerate(zip(placement, n), start=1):
        bad = [i for i in indices if not -blocks <= i < blocks]
        if bad:
            raise ValueError(f"{name}: stage {stage} has {blocks} blocks, block indices {bad} do not exist")
        resolved.append({i % blocks for i in indices})
    return resolved


class ResNet(nn.Module):
    """Dilated ResNet returning the four stage features ``[c1, c2, c3, c4]``.

    ``output_stride`` 8 keeps stages 3 and 4 at 1/8 resolution and dilates them by 2 and 4
    instead. The first block of a dilated stage keeps the previous stage's dilation (the
    torchvision rule, which is also the official SPNet stage 3), and with ``multi_grid`` the
    blocks of the last stage use ``dilation * multi_grid[i]`` (official SPNet: 4, 8, 16).

    ``out_channels`` and ``strides`` declare what ``forward`` returns (checked by the tests).
    ``checkpoint_stages`` (1-4): in training, each block of these stages keeps only its input and runs
    again in the backward pass (activation checkpointing, ``models/recompute.py``): same numbers, less memory.
    """

    def __init__(
        self,
        depth: int = 50,
        *,
        stage_blocks: Sequence[int] | None = None,
        base_width: int = 64,
        deep_stem: bool = True,
        output_stride: int = 8,
        multi_grid: Sequence[int] | None = (1, 2, 4),
        norm_layer: NormLayer = nn.BatchNorm2d,
        attention: AttentionFactory | None = None,
        attention_placement: Placement = "official",
        attention_position: str = "mid",
        block_conv: ConvFactory | None = None,
        block_conv_placement: Placement = "all",
        checkpoint_stages: Sequence[int] = (),
    ) -> None:
        super().__init__()
        if depth not in STAGE_BLOCKS:
            raise ValueError(f"unknown ResNet depth {depth}; choose from {sorted(STAGE_BLOCKS)}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        if attention_position not in POSITIONS:
            raise ValueError(f"attention_position must be one of {list(POSITIONS)}, got {attention_position!r}")
        if not set(checkpoint_stages) <= {1, 2, 3, 4}:
            raise ValueError(f"checkpoint_stages are ResNet stages 1-4, got {list(checkpoint_stages)}")
        block, default_blocks = STAGE_BLOCKS[depth]
        stage_blocks = tuple(stage_blocks or default_blocks)
        if len(stage_blocks) != 4 or min(stage_blocks) < 1:
            raise ValueError(f"stage_blocks must be 4 positive block counts, got {list(stage_blocks)}")
        if multi_grid is not None and len(multi_grid) != stage_blocks[-1]:
            raise ValueError(
                f"multi_grid {list(multi_grid)} needs one entry per block of stage 4, which has "
                f"{stage_blocks[-1]} blocks (e.g. multi_grid={[2**i for i in range(stage_blocks[-1])]})"
            )
        self.depth = depth
        self.stage_blocks = stage_blocks
        self.checkpoint_stages = tuple(sorted(set(checkpoint_stages)))
        placement = resolve_placement(attention_placement, stage_blocks) if attention else [set()] * 4
        conv_placement = (
            resolve_placement(block_conv_placement, stage_blocks, "block_conv_placement") if block_conv else [set()] * 4
        )

        # Stem: /4. The deep stem replaces the 7x7 conv by three 3x3 convs (official SPNet).
        stem_width = 2 * base_width if deep_stem else base_width
        if deep_stem:
            self.conv1 = nn.Sequential(
                nn.Conv2d(3, base_width, 3, 2, 1, bias=False),
                norm_layer(base_width),
                nn.ReLU(inplace=True),
                nn.Conv2d(base_width, base_width, 3, 1, 1, bias=False),
                norm_layer(base_width),
                nn.ReLU(inplace=True),
                nn.Conv2d(base_width, stem_width, 3, 1, 1, bias=False),
            )
        else:
            self.conv1 = nn.Conv2d(3, stem_width, 7, 2, 3, bias=False)
        self.bn1 = norm_layer(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)

        in_channels, net_stride, dilation = stem_width, 4, 1
        out_channels, strides = [], []
        for index, num_blocks in enumerate(stage_blocks):
            planes = base_width * 2**index
            stride = 1 if index == 0 else 2
            previous_dilation = dilation
            if stride > 1 and net_stride >= output_stride:
                dilation, stride = dilation * stride, 1  # trade the stride for dilation
            net_stride *= stride
            if index == 3 and multi_grid is not None:
                dilations = [dilation * g for g in multi_grid]
            else:
                dilations = [previous_dilation] + [dilation] * (num_blocks - 1)

            downsample = None
            if stride != 1 or in_channels != planes * block.expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(in_channels, planes * block.expansion, 1, stride, bias=False),
                    norm_layer(planes * block.expansion),
                )
            blocks = []
            for i, block_dilation in enumerate(dilations):
                blocks.append(
                    block(
                        in_channels if i == 0 else planes * block.expansion,
                        planes,
                        stride=stride if i == 0 else 1,
                        dilation=block_dilation,
                        downsample=downsample if i == 0 else None,
                        norm_layer=norm_layer,
                        attention=attention if i in placement[index] else None,
                        attention_position=attention_position,
                        conv=block_conv if i in conv_placement[index] else None,
                    )
                )
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
            in_channels = planes * block.expansion
            out_channels.append(in_channels)
            strides.append(net_stride)
        self.out_channels = tuple(out_channels)
        self.strides = tuple(strides)
        self._init_weights()

    def added_modules(self) -> dict[str, nn.Module]:
        """Modules a plain ResNet does not have (block attention, block convs), by qualified name.

        ImageNet weights cannot initialise them (except where a block conv declares
        ``DENSE_ALIASES``); they initialise themselves, some as the identity (e.g. non-local).
        """
        added = {}
        for name, module in self.named_modules():
            if isinstance(module, (BasicBlock, Bottleneck)):
                if module.attention is not None:
                    added[f"{name}.attention"] = module.attention
                if not isinstance(module.conv2, nn.Conv2d):
                    added[f"{name}.conv2"] = module.conv2
        return added

    def _init_weights(self) -> None:
        # The official initialisation: He-normal (fan_out) convs, norms at weight 1 / bias 0.
        # Added modules (attention, block convs) keep their own initialisation.
        skip = {id(m) for added in self.added_modules().values() for m in added.modules()}
        for m in self.modules():
            if id(m) in skip:
                continue
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def blocks(self) -> list[BasicBlock | Bottleneck]:
        """All residual blocks, stage by stage."""
        return [b for stage in (self.layer1, self.layer2, self.layer3, self.layer4) for b in stage]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, stem, H/4, W/4)
        features = []
        for index, stage in enumerate((self.layer1, self.layer2, self.layer3, self.layer4), start=1):
            if index in self.checkpoint_stages and should_recompute(self):
                for block in stage:  # one segment per block: the backward holds one block's activations at a time
                    x = recomputed(block, x)
            else:
                x = stage(x)
            features.append(x)
        return features  # [c1, c2, c3, c4]
