"""Heads: the contract of every ``HEADS`` entry, each paper head's definition, the paper widths, stages,
low-level fusion, bad input."""

from __future__ import annotations

import inspect
import sys

import pytest
import torch

from models.heads import HEADS, ContextHead
from models.modules import CrossChannelPool, MixedPooling
from utils.registry import BuildError

STAGES = (16, 32, 64, 64)  # a small backbone's channels per stage


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", sorted(HEADS))
@pytest.mark.parametrize("size", [(33, 47), (1, 1)])
def test_head_contract(name, size):
    head = HEADS[name](STAGES, 7, norm_layer=torch.nn.BatchNorm2d).train()
    assert head.in_stages == (4,)
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0.0, 0.1)  # zero-initialised gates (non-local, GC, CC) would block gradients
    x = torch.randn(2, 64, *size, requires_grad=True)
    logits = head([x])
    assert logits.shape == (2, 7, *size)
    (logits * torch.randn_like(logits)).sum().backward()
    # Gradients reach every parameter; every weight's is non-zero, except on a 1x1 map where attention
    # has one position (constant softmax: query / key gradients are exactly 0). Biases may get an exact
    # 0: a bias before a training-mode norm, or a key bias under a softmax, cannot change the output.
    missing = [n for n, p in head.named_parameters() if p.grad is None]
    zero = [n for n, p in head.named_parameters() if not n.endswith("bias") and size != (1, 1) and not p.grad.any()]
    assert missing == [] and zero == []
    head.eval()
    assert torch.equal(head([x]), head([x]))


def test_fcn_head_is_the_official_fcn_head():
    head = HEADS["fcn"]((256, 512, 1024, 2048), 19)
    assert isinstance(head.reduce, torch.nn.Identity) and len(head.context) == 0
    assert head.bottleneck[0].out_channels == 512 and head.bottleneck[0].kernel_size == (3, 3)
    assert _params(head) == 9_447_955  # the official FCNHead's count
    aux = HEADS["fcn"]((256, 512, 1024, 2048), 150, in_stage=3)
    assert _params(aux) == 2_398_358


# Every argument set away from every head's default, so a head that drops or hard-codes one differs.
EVERY_ARGUMENT = dict(
    in_stage=3,
    reduce="3x3",
    reduce_channels=12,
    context="ppm",
    context_args={"bins": [1, 2]},
    num_context=2,
    post_conv=True,
    concat_input=True,
    bottleneck=1,
    channels=8,
    low_level="seb",
    low_level_stage=2,
    dropout=0.3,
)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_every_head_is_its_papers_defaults_and_passes_every_argument_on(name):
    """A paper head takes every ContextHead argument (all settable from the config), in the data's order, and
    only its defaults differ: given every argument, it builds exactly the ContextHead those arguments give."""
    cls = HEADS[name]
    assert list(inspect.signature(cls).parameters) == list(inspect.signature(ContextHead).parameters)
    head, plain = cls(STAGES, 5, **EVERY_ARGUMENT), ContextHead(STAGES, 5, **EVERY_ARGUMENT)
    assert {k: v.shape for k, v in head.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    assert head.in_stages == plain.in_stages == (3, 2) and head.concat_input and head.dropout.p == 0.3


@pytest.mark.parametrize("name", sorted(HEADS))
def test_every_head_states_its_figure_and_its_source(name):
    cls = HEADS[name]
    assert cls.__doc__.startswith("stage ") and "classifier" in cls.__doc__  # the figure, input to logits
    assert "https://" in sys.modules[cls.__module__].__doc__  # the paper (or the code it comes from)


def test_sp_head_is_the_official_sp_head():
    head = HEADS["sp"]((256, 512, 1024, 2048), 19)
    assert head.reduce[0].out_channels == 1024 and head.reduce[0].kernel_size == (1, 1)
    assert [type(m) for m in head.context] == [MixedPooling, MixedPooling]
    assert head.bottleneck[0].out_channels == 512
    assert _params(head) == 15_623_699  # the official SPHead's count


@pytest.mark.parametrize("num_context", [0, 1, 2, 3])
def test_number_of_context_modules(num_context):
    head = HEADS["sp"](STAGES, 5, num_context=num_context, context_args={"pool_sizes": (4, 2)}).eval()
    assert len(head.context) == num_context
    assert all(m.pool_sizes == (4, 2) for m in head.context)
    assert head.reduce[0].out_channels == 32 and head.bottleneck[0].out_channels == 16
    assert head([torch.randn(1, 64, 9, 11)]).shape == (1, 5, 9, 11)


def test_widths_are_fractions_or_channel_counts():
    assert HEADS["fcn"](STAGES, 3, channels=0.5).bottleneck[0].out_channels == 32
    assert HEADS["fcn"](STAGES, 3, channels=24).bottleneck[0].out_channels == 24
    head = HEADS["nonlocal"](STAGES, 3, channels=8, reduce_channels=12)
    assert head.reduce[0].out_channels == 12 and head.post[0].out_channels == 8
    assert head.bottleneck[0].in_channels == 64 + 8  # the input concatenated with the post conv


def test_cross_channel_pooling_reduction_is_parameter_free():
    head = HEADS["fcn"](STAGES, 3, reduce="channel_max", reduce_channels=16, context="ppm")
    assert isinstance(head.reduce, CrossChannelPool) and _params(head.reduce) == 0
    x = torch.randn(1, 64, 5, 6)
    assert head.eval()([x]).shape == (1, 3, 5, 6)
    assert torch.equal(head.reduce(x), x.view(1, 16, 4, 5, 6).amax(dim=2))


def test_low_level_fusion_reads_a_second_stage_at_its_resolution():
    head = HEADS["ppm"](STAGES, 5, low_level="seb", low_level_stage=1).eval()
    assert head.in_stages == (4, 1)
    high, low = torch.randn(2, 64, 9, 12), torch.randn(2, 16, 33, 47)
    assert head([high, low]).shape == (2, 5, 33, 47)


def test_dropout_only_in_training():
    head = HEADS["sp"](STAGES, 3)
    x = [torch.randn(1, 64, 8, 8)]
    head.eval()
    assert torch.equal(head(x), head(x))
    assert head.dropout.p == 0.1


@pytest.mark.parametrize(
    "kwargs, key, message",
    [
        ({"in_stage": 5}, "in_stage", "stage 5 does not exist: the backbone returns stages 1-4"),
        ({"low_level": "seb", "low_level_stage": 0}, "low_level_stage", "stage 0 does not exist"),
        ({"context": "pmm"}, "context", "unknown name 'pmm'; did you mean 'ppm'?"),
        ({"context": "ppm", "context_args": {"binz": [1]}}, "context_args", "has no argument 'binz'; did you mean"),
        ({"context_args": {"bins": [1]}}, "context_args", "set only with a context module"),
        ({"reduce": "2x2"}, "reduce", "unknown reduction '2x2'"),
        ({"low_level": "sbe"}, "low_level", "unknown name 'sbe'; did you mean 'seb'?"),
    ],
)
def test_bad_arguments_name_their_key(kwargs, key, message):
    with pytest.raises(BuildError) as err:
        HEADS["fcn"](STAGES, 3, **kwargs)
    assert err.value.key == key and message in str(err.value)
