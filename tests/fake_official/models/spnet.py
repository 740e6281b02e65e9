"""A stand-in for the official ``models/spnet.py`` (github.com/Andrew-Qibin/SPNet), for testing
scripts/compare_official.py without the official code: the same constructor and forward contract,
an official-layout state dict, and the official computation (``tests/official_reference.py``,
BatchNorm with running statistics). Only the 19-class R50 layout of ``tests/data`` is offered."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

TESTS = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(TESTS))

from conftest import layout, random_state_dict  # noqa: E402
from official_reference import official_spnet  # noqa: E402


class SPNet(nn.Module):
    def __init__(self, nclass, backbone, pretrained, criterion=None, aux=True, norm_layer=nn.BatchNorm2d, spm_on=False):
        super().__init__()
        if (nclass, backbone, spm_on) != (19, "resnet50", True):
            raise ValueError("the stand-in only has the 19-class SPNet-R50 layout")
        self.criterion = criterion
        for key, value in random_state_dict(layout("official_spnet_r50_19cls"), dtype=torch.float32).items():
            *path, name = key.split(".")
            owner = self
            for part in path:
                if not hasattr(owner, part):
                    owner.add_module(part, nn.Module())
                owner = getattr(owner, part)
            if value.is_floating_point() and not name.startswith("running_"):
                owner.register_parameter(name, nn.Parameter(value))
            else:
                owner.register_buffer(name, value)

    def forward(self, x, y=None):
        tensors = {**dict(self.named_parameters()), **dict(self.named_buffers())}
        out, aux = official_spnet(tensors, x)
        if self.training:
            return out.argmax(1), self.criterion(out, y), self.criterion(aux, y)
        return out
