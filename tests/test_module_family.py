"""The module family wired into models: every table entry builds a full model from a config and trains a
step; block convs load dense ImageNet weights where shapes allow; per-name arguments; LR multipliers;
bad config values name their key; the train.py command line switches heads and attention."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, tiny_config
from models import BLOCK_ATTENTION, BLOCK_CONVS, HEADS, build_model
from models.backbones import ResNet
from models.modules import SelectiveKernelConv
from models.weights import load_backbone_weights
from utils.config import Config, load_config
from utils.optim import build_optimizer
from utils.registry import BuildError


def _with(cfg: Config, **model_changes) -> Config:
    backbone = dataclasses.replace(cfg.model.backbone, **model_changes.pop("backbone", {}))
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backbone=backbone, **model_changes))


def _train_step(cfg: Config) -> None:
    """One SGD step of the whole model on CPU: finite loss, every parameter gets a gradient and moves."""
    model = build_model(cfg).train()
    optimizer = build_optimizer(model, cfg.optim)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, target = torch.randn(2, 3, 65, 97), torch.randint(0, 5, (2, 65, 97))
    out = model(x)
    assert out["out"].shape == out["aux"].shape == (2, 5, 65, 97)
    loss = F.cross_entropy(out["out"], target) + 0.4 * F.cross_entropy(out["aux"], target)
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []
    optimizer.step()
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n]) and p.grad.any()]
    assert unchanged == []


@pytest.mark.parametrize("head", sorted(HEADS))
def test_every_head_trains_in_a_full_model(head):
    _train_step(_with(tiny_config(), head=head))


@pytest.mark.parametrize("attention", sorted(BLOCK_ATTENTION))
@pytest.mark.parametrize("position", ["mid", "post", "out"])
def test_every_block_attention_trains_in_a_full_model(attention, position):
    cfg = _with(tiny_config(base_width=16), backbone={"attention": attention, "attention_position": position})
    model = build_model(cfg)
    added = model.backbone.added_modules()
    assert len(added) == 1 + 1 + 1 + 3  # official placement: last block of stages 1-3, every block of stage 4
    widths = {m.out_channels for name, m in added.items() if name.startswith("layer4")}
    assert widths == ({128} if position == "mid" else {512})  # stage 4: planes 128, expansion 4
    _train_step(cfg)


@pytest.mark.parametrize("block_conv", sorted(BLOCK_CONVS))
def test_every_block_conv_trains_in_a_full_model(block_conv):
    cfg = _with(tiny_config(base_width=16), backbone={"block_conv": block_conv})
    model = build_model(cfg)
    blocks = model.backbone.blocks()
    assert all(isinstance(b.conv2, BLOCK_CONVS[block_conv]) for b in blocks)
    assert all(isinstance(b.bn2, torch.nn.Identity) == BLOCK_CONVS[block_conv].normalizes_output for b in blocks)
    _train_step(cfg)


def test_block_conv_placement_and_basic_blocks():
    cfg = _with(tiny_config(), backbone={"block_conv": "acnet", "block_conv_placement": "last"})
    convs = {n for n, m in build_model(cfg).backbone.added_modules().items() if n.endswith("conv2")}
    assert convs == {"layer1.0.conv2", "layer2.0.conv2", "layer3.1.conv2", "layer4.2.conv2"}
    basic = _with(tiny_config(depth=18, stage_blocks=(1, 1, 1, 2), multi_grid=(1, 2)), backbone={"block_conv": "sk"})
    model = build_model(basic)
    assert isinstance(model.backbone.layer3[0].conv2, SelectiveKernelConv)
    assert model.eval()(torch.randn(1, 3, 33, 47))["out"].shape == (1, 5, 33, 47)


def test_bam_at_stage_boundaries():
    """BAM's placement: on the output of the last block of stages 1-3 (position "out")."""
    placement = ((-1,), (-1,), (-1,), ())
    cfg = _with(
        tiny_config(), backbone={"attention": "bam", "attention_placement": placement, "attention_position": "out"}
    )
    backbone = build_model(cfg).backbone.eval()
    assert sorted(backbone.added_modules()) == ["layer1.0.attention", "layer2.0.attention", "layer3.1.attention"]
    x = torch.randn(1, 3, 65, 97)
    with torch.no_grad():
        c1 = backbone.layer1(backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(x)))))
        block = backbone.layer1[0]
        attention, block.attention = block.attention, None
        plain = backbone.layer1(backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(x)))))
    torch.testing.assert_close(c1, attention(plain))  # applied after the residual add and ReLU


def test_low_level_fusion_from_the_config():
    cfg = load_config(
        ROOT / "configs/demo.yaml",
        ["model.head=ppm", "model.head_args.ppm.low_level=seb", "model.head_args.ppm.low_level_stage=1"],
    )
    model = build_model(cfg).eval()
    assert model.head.in_stages == (4, 1) and model.head.low_level.out_channels == 64
    assert model(torch.randn(1, 3, 65, 97))["out"].shape == (1, 19, 65, 97)


def _imagenet_backbone_file(tmp_path, **resnet):
    """A converted ImageNet backbone file (our ``{"backbone": state_dict}`` format) with random weights."""
    plain = ResNet(50, stage_blocks=(1, 1, 2, 3), base_width=8, **resnet)
    with torch.no_grad():
        for p in plain.parameters():
            p.normal_()
    path = tmp_path / "r50_init.pth"
    torch.save({"backbone": plain.state_dict()}, path)
    return plain.state_dict(), path


@pytest.mark.parametrize(
    "name, loads_conv, loads_norm",
    [("acnet", True, True), ("sk", True, True), ("split_attention", False, False), ("dwsep", False, True)],
)
def test_dense_imagenet_weights_initialise_block_convs_where_shapes_allow(tmp_path, name, loads_conv, loads_norm):
    dense, path = _imagenet_backbone_file(tmp_path)
    cfg = _with(tiny_config(), backbone={"block_conv": name, "attention": None})
    backbone = build_model(cfg).backbone
    report = load_backbone_weights(backbone, str(path))
    block = backbone.layer2[0]
    aliases = type(block.conv2).DENSE_ALIASES
    if loads_conv:
        conv = block.conv2.get_submodule(aliases["conv"])
        assert torch.equal(conv.weight, dense["layer2.0.conv2.weight"])
    else:
        assert f"layer2.0.conv2.* ({type(block.conv2).__name__}: no dense counterpart)" in report.dropped
    norm = block.conv2.get_submodule(aliases["norm"]) if block.conv2.normalizes_output and loads_norm else block.bn2
    if loads_norm:
        assert torch.equal(norm.running_var, dense["layer2.0.bn2.running_var"])
    # every other tensor of the plain ResNet loaded by name; the report names what kept its init
    assert torch.equal(backbone.layer2[0].conv3.weight, dense["layer2.0.conv3.weight"])
    assert "layer2.0.conv2" in str(report) and "not initialised by the file" in str(report)


def test_custom_lr_multipliers(tmp_path):
    cfg = _with(tiny_config(), backbone={"attention": "se"})
    cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, custom_lr_mults={"attention": 10.0}))
    model = build_model(cfg)
    groups = {g["name"]: g for g in build_optimizer(model, cfg.optim).param_groups}
    assert set(groups) == {"backbone", "heads", "custom:attention"}
    assert groups["custom:attention"]["lr"] == pytest.approx(10 * cfg.optim.lr)
    assert groups["heads"]["lr"] == pytest.approx(cfg.optim.head_lr_mult * cfg.optim.lr)
    attention = {id(p) for n, p in model.named_parameters() if ".attention." in n}
    assert {id(p) for p in groups["custom:attention"]["params"]} == attention
    total = sum(len(g["params"]) for g in groups.values())
    assert total == len(list(model.parameters()))
    # the default is the official recipe: two groups
    default = build_optimizer(build_model(tiny_config()), tiny_config().optim)
    assert [g["name"] for g in default.param_groups] == ["backbone", "heads"]
    typo = dataclasses.replace(cfg.optim, custom_lr_mults={"atention": 10.0})
    with pytest.raises(ValueError, match=r"optim.custom_lr_mults: \['atention'\] match no parameter name"):
        build_optimizer(model, typo)


RENAMED = "'mpm' is now 'sp' (SPNet's SP head)"


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.head=pmm", "model.head: unknown name 'pmm'; did you mean 'ppm'? Choose from ['aspp', 'cc', 'fcn'"),
        ("model.backbone.attention=sse", "model.backbone.attention: unknown name 'sse'"),
        ("model.backbone.block_conv=skk", "model.backbone.block_conv: unknown name 'skk'; did you mean 'sk'?"),
        (
            "model.head_args.sp.in_stage=5",
            "model.head_args.sp.in_stage: stage 5 does not exist: the backbone returns stages 1-4",
        ),
        (
            "model.head_args.sp.low_level_stage=7",
            "model.head_args.sp.low_level_stage: stage 7 does not exist",
        ),
        ("model.head_args.pmm.dropout=0", "model.head_args: unknown name 'pmm'; did you mean 'ppm'?"),
        ("model.head=mpm", f"model.head: {RENAMED}; rename it in model.head and model.head_args"),
        ("model.head_args.mpm.num_context=1", f"model.head_args: {RENAMED}; rename it in model.head and model.head_"),
        ("model.aux_head=mpm", f"model.aux_head: {RENAMED}; rename it in model.aux_head and model.aux_head_args"),
        ("model.aux_head_args.mpm.dropout=0", f"model.aux_head_args: {RENAMED}; rename it in model.aux_head and"),
        ("model.head_args.sp.context_args.pool_size=[4]", "model.head_args.sp.context_args: MixedPooling has no"),
        (
            "model.backbone.attention_args.se.reductoin=4",
            "model.backbone.attention_args.se: SqueezeExcitation has no argument 'reductoin'; "
            "did you mean 'reduction'? Its arguments: ['reduction']",
        ),
        ("model.backbone.block_conv_args.sk.stride=2", "are set by the code that builds it, not by the config"),
        ("model.backbone.attention_args.bam.fusion=max", "model.backbone.attention_args.bam: BAM: fusion must be"),
    ],
)
def test_bad_module_config_names_the_key_and_the_choices(override, message):
    extra = ["model.backbone.block_conv=sk"] if "block_conv_args" in override else []
    extra += ["model.backbone.attention=bam"] if "bam" in override else []
    cfg = load_config(ROOT / "configs/demo.yaml", [*extra, override])
    with pytest.raises(BuildError) as err:
        build_model(cfg)
    assert message in str(err.value)


def test_the_former_head_key_mpm_fails_with_the_new_key():
    """'mpm' was the SP head's key; now it names only the mixed pooling module (``context: mpm``)."""
    demo = ROOT / "configs/demo.yaml"
    with pytest.raises(BuildError) as err:
        build_model(load_config(demo, ["model.head=mpm"]))
    assert str(err.value) == (
        "model.head: 'mpm' is now 'sp' (SPNet's SP head); rename it in model.head and model.head_args"
    )
    with pytest.raises(BuildError, match=r"^model.aux_head_args: 'mpm' is now 'sp' \(SPNet's SP head\); rename it"):
        build_model(load_config(demo, ["model.aux_head=null", "model.aux_head_args.mpm.dropout=0"]))
    fcn_with_mpm = ["model.head=fcn", "model.head_args.fcn.reduce=1x1", "model.head_args.fcn.context=mpm"]
    with torch.device("meta"):
        model = build_model(load_config(demo, fcn_with_mpm))
    assert type(model.head.context[0]).__name__ == "MixedPooling"


ATTENTION = "model.backbone.attention"
BLOCK_CONV = "model.backbone.block_conv"

# Every argument check of the backbone, heads and modules, met the way a user meets it: a config value.
# (overrides on configs/demo.yaml, the start of the one-line error). Widths: stages 32, 64, 128, 256.
ARGUMENT_CHECKS = [
    ([f"{ATTENTION}=se", f"{ATTENTION}_args.se.reduction=0"], f"{ATTENTION}_args.se: SqueezeExcitation: reduction"),
    ([f"{ATTENTION}=scse", f"{ATTENTION}_args.scse.reduction=0"], f"{ATTENTION}_args.scse: SCSE: reduction must"),
    ([f"{ATTENTION}=cbam", f"{ATTENTION}_args.cbam.reduction=0"], f"{ATTENTION}_args.cbam: CBAM: reduction must"),
    ([f"{ATTENTION}=cbam", f"{ATTENTION}_args.cbam.kernel_size=4"], f"{ATTENTION}_args.cbam: CBAM: kernel_size"),
    ([f"{ATTENTION}=bam", f"{ATTENTION}_args.bam.reduction=0"], f"{ATTENTION}_args.bam: BAM: reduction must"),
    ([f"{ATTENTION}=bam", f"{ATTENTION}_args.bam.dilation=0"], f"{ATTENTION}_args.bam: BAM: dilation must"),
    ([f"{ATTENTION}=bam", f"{ATTENTION}_args.bam.num_dilated_convs=-1"], "BAM: num_dilated_convs must be >= 0"),
    ([f"{ATTENTION}=gc", f"{ATTENTION}_args.gc.reduction=0"], f"{ATTENTION}_args.gc: GlobalContext: reduction"),
    ([f"{ATTENTION}=gc", f"{ATTENTION}_args.gc.pooling=max"], "GlobalContext: pooling must be one of"),
    ([f"{ATTENTION}=gc", f"{ATTENTION}_args.gc.fusions=[]"], "GlobalContext: fusions must be a non-empty list"),
    ([f"{ATTENTION}=gc", f"{ATTENTION}_args.gc.fusions=[add, add]"], "GlobalContext: fusions must not repeat"),
    (["model.head=cc", "model.head_args.cc.context_args.reduction=0"], "model.head_args.cc.context_args: Criss"),
    (["model.head=cc", "model.head_args.cc.context_args.recurrence=0"], "CrissCrossAttention: recurrence must"),
    (["model.head=nonlocal", "model.head_args.nonlocal.context_args.reduction=0"], "NonLocal2d: reduction must"),
    (["model.head=ppm", "model.head_args.ppm.context_args.reduction=0"], "PyramidPooling: reduction must"),
    (["model.head=ppm", "model.head_args.ppm.context_args.bins=[1, 0]"], "PyramidPooling: bins must"),
    (["model.head=aspp", "model.head_args.aspp.context_args.out_channels=0"], "ASPP: out_channels must be >= 1"),
    (["model.head=aspp", "model.head_args.aspp.context_args.dilations=[]"], "ASPP: dilations must"),
    (["model.head=spp", "model.head_args.spp.context_args.kernel_sizes=[5, 8]"], "SPP: kernel_sizes must be odd"),
    (["model.head=rfb", "model.head_args.rfb.reduce_channels=8"], "rfb.context_args: RFB: in_channels must be >= 16"),
    (["model.head=rfb", "model.head_args.rfb.context=rfb_s", "model.head_args.rfb.reduce_channels=8"], "RFBSmall: in_"),
    (["model.head=rfb", "model.head_args.rfb.context_args.out_channels=0"], "RFB: out_channels must be >= 1"),
    (["model.head=rfb", "model.head_args.rfb.context_args.stride=0"], "RFB: stride must be >= 1"),
    (["model.head=rfb", "model.head_args.rfb.context_args.visual=0"], "RFB: visual must be >= 1"),
    (["model.head=ssh", "model.head_args.ssh.reduce_channels=1"], "SSHContext: in_channels must be >= 2"),
    (["model.head_args.sp.reduce_channels=2"], "MixedPooling: in_channels must be >= 4"),
    ([f"{BLOCK_CONV}=sk", f"{BLOCK_CONV}_args.sk.num_branches=0"], f"{BLOCK_CONV}_args.sk: SelectiveKernelConv: num_"),
    ([f"{BLOCK_CONV}=sk", f"{BLOCK_CONV}_args.sk.reduction=0"], "SelectiveKernelConv: reduction and min_channels"),
    ([f"{BLOCK_CONV}=sk", f"{BLOCK_CONV}_args.sk.groups=3"], "SelectiveKernelConv: groups=3 must divide"),
    ([f"{BLOCK_CONV}=split_attention", f"{BLOCK_CONV}_args.split_attention.radix=0"], "SplitAttentionConv: radix,"),
    ([f"{BLOCK_CONV}=split_attention", f"{BLOCK_CONV}_args.split_attention.kernel_size=2"], "kernel_size must be odd"),
    ([f"{BLOCK_CONV}=split_attention", f"{BLOCK_CONV}_args.split_attention.groups=3"], "groups * radix = 6 must"),
    ([f"{BLOCK_CONV}=acnet", f"{BLOCK_CONV}_args.acnet.kernel_size=1"], "ACBlock: kernel_size must be odd and >= 3"),
    ([f"{BLOCK_CONV}=acnet", f"{BLOCK_CONV}_args.acnet.padding=-1"], "ACBlock: padding must be >= 0"),
    ([f"{BLOCK_CONV}=mixconv", f"{BLOCK_CONV}_args.mixconv.kernel_sizes=[3, 4]"], "MixConv: kernel_sizes must be"),
    ([f"{BLOCK_CONV}=mixconv", "model.backbone.base_width=2"], "MixConv: kernel_sizes [3, 5, 7] splits the channels"),
    ([f"{BLOCK_CONV}=dwsep", f"{BLOCK_CONV}_args.dwsep.kernel_size=2"], "DepthwiseSeparableConv: kernel_size must"),
    (["model.head_args.sp.channels=0.001"], "model.head_args.sp.channels: 0.001 of 256 input channels is 0"),
    (["model.head_args.sp.reduce_channels=0.001"], "model.head_args.sp.reduce_channels: 0.001 of 256 input"),
    (["model.head=fcn", "model.head_args.fcn.num_context=2"], "model.head_args.fcn.context_args: set only with a"),
    (["model.head_args.sp.reduce=2x2"], "model.head_args.sp.reduce: unknown reduction '2x2'"),
    (["model.head_args.sp.context=pmm"], "model.head_args.sp.context: unknown name 'pmm'; did you mean 'ppm'?"),
    (["model.head_args.sp.low_level=sbe"], "model.head_args.sp.low_level: unknown name 'sbe'; did you mean 'seb'?"),
    (
        ["model.head_args.sp.reduce=channel_max", "model.head_args.sp.reduce_channels=100"],
        "CrossChannelPool needs in_channels (256) to be a multiple of out_channels (100)",
    ),
    (["model.backbone.depth=51"], "unknown ResNet depth 51; choose from [18, 34, 50, 101, 152]"),
    (["model.backbone.stage_blocks=[1, 1, 1]"], "stage_blocks must be 4 positive block counts, got [1, 1, 1]"),
    (["model.backbone.multi_grid=[1, 2, 4]"], "multi_grid [1, 2, 4] needs one entry per block of stage 4"),
    (["model.backbone.attention_placement=offical"], "unknown attention_placement 'offical'; choose from"),
    (["model.backbone.attention_placement=[[0]]"], "attention_placement needs one list of block indices per stage"),
    (["model.backbone.attention_placement=[[2], [], [], []]"], "attention_placement: stage 1 has 2 blocks"),
    ([f"{BLOCK_CONV}=sk", f"{BLOCK_CONV}_placement=lsat"], "unknown block_conv_placement 'lsat'; choose from"),
]


@pytest.mark.parametrize("overrides, message", ARGUMENT_CHECKS, ids=lambda v: v[-1] if isinstance(v, list) else "")
def test_every_argument_check_is_met_through_the_config(overrides, message):
    """Each check a constructor keeps is on a value a config sets, and its one line names where and the fix."""
    cfg = load_config(ROOT / "configs/demo.yaml", overrides)
    with pytest.raises(ValueError) as err, torch.device("meta"):
        build_model(cfg)
    assert message in str(err.value)


def test_switching_the_head_keeps_each_heads_arguments():
    """head_args holds every head's arguments by name: switching the head never hands SP head args to PPM."""
    cfg = load_config(ROOT / "configs/ade20k/spnet_r50.yaml", ["model.head=ppm", "model.backbone.pretrained=null"])
    assert cfg.model.head_args["sp"]["num_context"] == 2  # still there, unused
    with torch.device("meta"):
        model = build_model(cfg)
    assert type(model.head.context[0]).__name__ == "PyramidPooling"


@pytest.mark.slow
@pytest.mark.parametrize("override", ["model.head=ppm", "model.backbone.attention=se"])
def test_train_cli_switches_the_module_from_the_command_line(synthetic_ade20k, tmp_path, override):
    """The issue's command: the ADE20K SPNet config, one module changed by a command-line override."""
    small = [  # the same structure at a size the CPU runs in seconds
        "model.backbone.stage_blocks=[1, 1, 1, 3]",
        "model.backbone.base_width=8",
        "model.backbone.pretrained=null",
        "data.augment.crop_size=[64, 64]",
        "train.batch_size=2",
        "train.per_device_batch=null",
        "train.num_workers=0",
        "train.eval_max_images=1",
        "train.log_interval=1",
    ]
    command = [
        sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs/ade20k/spnet_r50.yaml"), override,
        "train.max_iters=2", f"data.root={synthetic_ade20k}", f"train.work_dir={tmp_path}", *small,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    log = (tmp_path / "train.log").read_text()
    assert len(re.findall(r"iter \d/2 loss [\d.]+", log)) == 2
    saved = load_config(tmp_path / "config.yaml")
    if override == "model.head=ppm":
        assert saved.model.head == "ppm"
    else:
        assert saved.model.backbone.attention == "se"
    state = torch.load(tmp_path / "last.pth", weights_only=True)
    expected = "head.context.0.levels.0.0.weight" if "head" in override else "backbone.layer4.0.attention.fc1.weight"
    assert expected in state["model"]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


COMPARE = sorted((ROOT / "configs/ade20k/compare").glob("*.yaml"))
SP_HEAD_ROWS = {"mpm1": "sp", "mpm2": "sp"}  # head_mpm1 / head_mpm2: the SP head with 1 and 2 MPMs


@pytest.mark.parametrize("path", COMPARE, ids=lambda p: p.stem)
def test_comparison_configs_change_only_their_module(path):
    """Each comparison row is the SPNet R50 ADE20K recipe with only the head or the block attention changed."""
    from utils.config import config_to_dict

    base = _flatten(config_to_dict(load_config(ROOT / "configs/ade20k/spnet_r50.yaml")))
    row = _flatten(config_to_dict(load_config(path)))
    changed = {k for k in base.keys() | row.keys() if base.get(k) != row.get(k)}
    kind, name = path.stem.split("_", 1)
    if kind == "head":
        assert changed <= {"model.head", "model.head_args.sp.num_context"}
        assert row["model.head"] == SP_HEAD_ROWS.get(name, name)
    else:
        assert changed <= {"model.backbone.attention"}
        assert row["model.backbone.attention"] == (None if name == "none" else name)


def test_comparison_configs_cover_every_head_and_block_attention():
    rows = {p.stem for p in COMPARE}
    assert {f"head_{h}" for h in HEADS if h != "sp"} | {f"head_{row}" for row in SP_HEAD_ROWS} == {
        r for r in rows if r.startswith("head_")
    }
    assert {f"attention_{a}" for a in [*BLOCK_ATTENTION, "none"]} == {r for r in rows if r.startswith("attention_")}


@pytest.mark.slow
def test_one_image_per_forward_pass_with_image_pooling_is_a_clear_error(synthetic_cityscapes, tmp_path):
    """PPM's 1x1 level has one value per channel with one image: say what to change, not PyTorch's message."""
    import train

    args = [
        "--config", str(ROOT / "configs/demo.yaml"), f"data.root={synthetic_cityscapes}", f"train.work_dir={tmp_path}",
        "model.head=ppm", "model.backbone.base_width=8", "data.augment.crop_size=[64, 64]", "train.batch_size=2",
        "train.per_device_batch=1", "train.num_workers=0", "train.max_iters=1",
    ]  # fmt: skip
    with pytest.raises(ValueError, match=r"1 image\(s\) per forward pass.*set train.per_device_batch >= 2"):
        train.main(args)
