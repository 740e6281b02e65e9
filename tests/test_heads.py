"""Heads: the shape contract for every registered head, and the widths of the paper's heads."""

from __future__ import annotations

import pytest
import torch

from models.heads import HEADS, FCNHead, SPNetHead


@pytest.mark.parametrize("name", sorted(HEADS))
@pytest.mark.parametrize("size", [(33, 47), (5, 3)])
def test_head_contract(name, size):
    head = HEADS[name](64, 7, norm_layer=torch.nn.BatchNorm2d).eval()
    assert head(torch.randn(2, 64, *size)).shape == (2, 7, *size)


def test_fcn_head_widths_and_count():
    head = FCNHead(2048, 19)
    assert head.conv[0].out_channels == 512
    assert sum(p.numel() for p in head.parameters()) == 9_447_955  # official_spnet.md
    aux = FCNHead(1024, 150)
    assert sum(p.numel() for p in aux.parameters()) == 2_398_358


@pytest.mark.parametrize("num_mpm", [0, 1, 2, 3])
def test_spnet_head_number_of_mpms(num_mpm):
    head = SPNetHead(64, 5, num_mpm=num_mpm, pool_sizes=(4, 2)).eval()
    assert len(head.context) == num_mpm
    assert all(m.pool_sizes == (4, 2) for m in head.context)
    assert head.reduce[0].out_channels == 32 and head.bottleneck[0].out_channels == 16
    assert head(torch.randn(1, 64, 9, 11)).shape == (1, 5, 9, 11)


def test_dropout_only_in_training():
    head = SPNetHead(32, 3)
    x = torch.randn(1, 32, 8, 8)
    head.eval()
    assert torch.equal(head(x), head(x))
    head.train()
    assert head.dropout.p == 0.1
