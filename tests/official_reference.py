"""The official SPNet forward pass, written functionally over an official-layout state dict.

Written from the computation of github.com/Andrew-Qibin/SPNet (models/resnet.py, customize.py,
spnet.py, fcn.py), not from our modules: the tests
compare our model, after conversion, against this. Eval mode only (BN uses running statistics,
dropout is off). Works for any widths, so tests can also run it on small layouts.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F

UP = {"mode": "bilinear", "align_corners": True}


def _conv(x, sd, name, stride=1, padding=0, dilation=1):
    return F.conv2d(x, sd[name + ".weight"], sd.get(name + ".bias"), stride, padding, dilation)


def _bn(x, sd, name):
    return F.batch_norm(
        x,
        sd[name + ".running_mean"],
        sd[name + ".running_var"],
        sd[name + ".weight"],
        sd[name + ".bias"],
        False,
        0.0,
        1e-5,
    )


def _spblock(x, sd, p):
    """Official SPBlock: returns the gate; the block multiplies it in."""
    _, _, h, w = x.shape
    x1 = _bn(_conv(F.adaptive_avg_pool2d(x, (h, 1)), sd, p + ".conv1", padding=(1, 0)), sd, p + ".bn1")
    x2 = _bn(_conv(F.adaptive_avg_pool2d(x, (1, w)), sd, p + ".conv2", padding=(0, 1)), sd, p + ".bn2")
    x = F.relu(x1.expand(-1, -1, h, w) + x2.expand(-1, -1, h, w))
    return torch.sigmoid(_conv(x, sd, p + ".conv3"))


def _bottleneck(x, sd, p, stride, dilation):
    out = F.relu(_bn(_conv(x, sd, p + ".conv1"), sd, p + ".bn1"))
    out = F.relu(_bn(_conv(out, sd, p + ".conv2", stride, dilation, dilation), sd, p + ".bn2"))
    if p + ".spm.conv3.weight" in sd:
        out = out * _spblock(out, sd, p + ".spm")
    out = _bn(_conv(out, sd, p + ".conv3"), sd, p + ".bn3")
    if p + ".downsample.0.weight" in sd:
        x = _bn(_conv(x, sd, p + ".downsample.0", stride), sd, p + ".downsample.1")
    return F.relu(out + x)


def num_blocks(sd, prefix, layer):
    return 1 + max(int(m[1]) for k in sd if (m := re.match(re.escape(prefix) + rf"layer{layer}\.(\d+)\.", k)))


def official_backbone(sd, x, prefix="pretrained."):
    """Deep stem, layers with the official dilations: layer3 (1, 2, 2, ...), layer4 (4, 8, 16)."""
    p = prefix
    x = F.relu(_bn(_conv(x, sd, p + "conv1.0", 2, 1), sd, p + "conv1.1"))
    x = F.relu(_bn(_conv(x, sd, p + "conv1.3", 1, 1), sd, p + "conv1.4"))
    x = _conv(x, sd, p + "conv1.6", 1, 1)
    x = F.max_pool2d(F.relu(_bn(x, sd, p + "bn1")), 3, 2, 1)
    features = []
    for layer, stride, dilations in ((1, 1, None), (2, 2, None), (3, 1, "3"), (4, 1, "4")):
        n = num_blocks(sd, p, layer)
        if dilations == "3":
            dil = [1] + [2] * (n - 1)
        elif dilations == "4":
            dil = [4, 8, 16]
        else:
            dil = [1] * n
        for i in range(n):
            x = _bottleneck(x, sd, f"{p}layer{layer}.{i}", stride if i == 0 else 1, dil[i])
        features.append(x)
    return features


def _seq_conv_bn(x, sd, name, padding=0, relu=False):
    x = _bn(_conv(x, sd, name + ".0", padding=padding), sd, name + ".1")
    return F.relu(x) if relu else x


def _mpm(x, sd, p):
    """Official customize.StripPooling (the mixed pooling module), pool sizes (20, 12)."""
    _, _, h, w = x.shape
    x1 = _seq_conv_bn(x, sd, p + ".conv1_1", relu=True)
    x2 = _seq_conv_bn(x, sd, p + ".conv1_2", relu=True)
    x2_1 = _seq_conv_bn(x1, sd, p + ".conv2_0", padding=1)
    x2_2 = F.interpolate(_seq_conv_bn(F.adaptive_avg_pool2d(x1, 20), sd, p + ".conv2_1", padding=1), (h, w), **UP)
    x2_3 = F.interpolate(_seq_conv_bn(F.adaptive_avg_pool2d(x1, 12), sd, p + ".conv2_2", padding=1), (h, w), **UP)
    x2_4 = F.interpolate(
        _seq_conv_bn(F.adaptive_avg_pool2d(x2, (1, w)), sd, p + ".conv2_3", padding=(0, 1)), (h, w), **UP
    )
    x2_5 = F.interpolate(
        _seq_conv_bn(F.adaptive_avg_pool2d(x2, (h, 1)), sd, p + ".conv2_4", padding=(1, 0)), (h, w), **UP
    )
    x1 = _seq_conv_bn(F.relu(x2_1 + x2_2 + x2_3), sd, p + ".conv2_5", padding=1, relu=True)
    x2 = _seq_conv_bn(F.relu(x2_5 + x2_4), sd, p + ".conv2_6", padding=1, relu=True)
    out = _seq_conv_bn(torch.cat([x1, x2], 1), sd, p + ".conv3")
    return F.relu(x + out)


def official_spnet(sd, x):
    """Returns (main logits, aux logits), both at input size, as the official SPNet in eval mode."""
    h, w = x.shape[-2:]
    _, _, c3, c4 = official_backbone(sd, x)
    y = _seq_conv_bn(c4, sd, "head.trans_layer", relu=True)
    for i in (1, 2):
        if f"head.strip_pool{i}.conv3.0.weight" in sd:
            y = _mpm(y, sd, f"head.strip_pool{i}")
    y = _seq_conv_bn(y, sd, "head.score_layer", padding=1, relu=True)
    y = _conv(y, sd, "head.score_layer.4")  # index 3 is Dropout2d, identity in eval
    aux = F.relu(_bn(_conv(c3, sd, "auxlayer.conv5.0", padding=1), sd, "auxlayer.conv5.1"))
    aux = _conv(aux, sd, "auxlayer.conv5.4")
    return F.interpolate(y, (h, w), **UP), F.interpolate(aux, (h, w), **UP)
