"""Config loading: every shipped file, inheritance, typed overrides and the promised error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import build_model
from utils.config import Config, ConfigError, config_from_dict, config_to_dict, load_config, save_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_shipped_config_loads_and_round_trips(path, tmp_path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_bases_merge_in_order_and_named_args_merge_by_name(tmp_path):
    _write(tmp_path, "a.yaml", "model:\n  num_classes: 7\n  head_args: {sp: {num_context: 1, dropout: 0.2}}\n")
    _write(tmp_path, "b.yaml", "model:\n  num_classes: 9\n  backbone: {depth: 101}\n")
    child = _write(
        tmp_path,
        "c.yaml",
        "_base_: [a.yaml, b.yaml]\nmodel:\n  head: ppm\n  head_args: {ppm: {dropout: 0.3}, sp: {num_context: 2}}\n",
    )
    cfg = load_config(child)
    assert cfg.model.num_classes == 9  # the later base wins
    assert cfg.model.backbone.depth == 101 and cfg.model.backbone.output_stride == 8  # sections merge
    # per-name arguments live side by side; within a name they merge argument by argument
    assert cfg.model.head == "ppm"
    assert cfg.model.head_args == {"sp": {"num_context": 2, "dropout": 0.2}, "ppm": {"dropout": 0.3}}


def test_named_args_must_be_mappings_per_name():
    with pytest.raises(ConfigError, match=r"model.head_args holds one mapping of arguments per name, e.g. head_args: "):
        load_config(ROOT / "configs/cityscapes/spnet_r50.yaml", ["model.head_args={num_context: 1}"])


def test_overrides_are_typed(tmp_path):
    cfg = load_config(
        ROOT / "configs/cityscapes/spnet_r50.yaml",
        [
            "model.backbone.depth=101",
            "model.backbone.multi_grid=[1, 1, 1]",
            "model.backbone.deep_stem=false",
            "model.backbone.attention=null",
            "model.head_args.sp.num_context=1",
            "model.backbone.pretrained=pretrained/r101.pth",
            "model.backbone.attention_placement=[[0], [], [], [0, 2]]",
        ],
    )
    b = cfg.model.backbone
    assert (b.depth, b.multi_grid, b.deep_stem, b.attention) == (101, (1, 1, 1), False, None)
    assert cfg.model.head_args == {"sp": {"num_context": 1, "context_args": {"pool_sizes": [20, 12]}}}
    assert b.pretrained == "pretrained/r101.pth"
    assert b.attention_placement == ((0,), (), (), (0, 2))


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.backbone.depht=101", "unknown key 'model.backbone.depht'; did you mean 'depth'?"),
        ("model.num_clases=3", "unknown key 'model.num_clases'; did you mean 'num_classes'?"),
        ("modle.num_classes=3", "unknown key 'modle'; did you mean 'model'?"),
        ("model.backbone.depth=fifty", "model.backbone.depth = 'fifty' must be an integer"),
        ("model.backbone.depth=true", "model.backbone.depth = True must be an integer"),
        ("model.backbone.output_stride=4", "model.backbone.output_stride = 4 must be one of [8, 16, 32]"),
        ("model.norm=gm", "model.norm = 'gm' must be one of ['bn', 'gn']; did you mean 'gn'?"),
        ("model.backbone.multi_grid=4", "model.backbone.multi_grid = 4 must be a list of integers or null"),
        ("model.backbone", "must look like key.sub=value"),
    ],
)
def test_override_errors(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "configs/cityscapes/spnet_r50.yaml", [override])
    assert message in str(err.value)


def test_unknown_key_in_file_names_the_file(tmp_path):
    path = _write(tmp_path, "typo.yaml", "model:\n  backbone:\n    atention: strip\n")
    with pytest.raises(
        ConfigError, match=r"typo.yaml: unknown key 'model.backbone.atention'; did you mean 'attention'\?"
    ):
        load_config(path)


def test_a_file_or_override_that_is_not_yaml_is_one_line_with_its_line_and_column(tmp_path):
    """PyYAML's own message spans five lines with a source excerpt; the CLI prints one."""
    path = _write(tmp_path, "broken.yaml", "model:\n  head: sp\n num_classes: [1, 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (
        f"{path.resolve()}, line 3, column 2: not valid YAML: while parsing a block mapping: "
        "expected <block end>, but found '<block mapping start>'"
    )
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "configs/demo.yaml", ["model.head_args={sp: [1"])
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("override 'model.head_args={sp: [1': cannot parse value '{sp: [1', line 1, ")


def test_missing_base_names_both_files(tmp_path):
    path = _write(tmp_path, "child.yaml", "_base_: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"config file not found: .*nowhere.yaml \(named in _base_ of .*child.yaml\)"):
        load_config(path)


def test_base_cycle_and_missing_file(tmp_path):
    _write(tmp_path, "a.yaml", "_base_: b.yaml\n")
    _write(tmp_path, "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="_base_ cycle"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_unknown_names_and_arguments_fail_at_build_with_suggestions():
    path = ROOT / "configs/cityscapes/spnet_r50.yaml"
    with pytest.raises(
        ValueError, match=r"model.head: unknown name 'nonlocl'; did you mean 'nonlocal'\? Choose from \["
    ):
        build_model(load_config(path, ["model.head=nonlocl"]))
    with pytest.raises(ValueError, match=r"model.backbone.attention: unknown name 'stirp'; did you mean 'strip'\?"):
        build_model(load_config(path, ["model.backbone.attention=stirp"]))
    with pytest.raises(
        ValueError, match=r"model.head_args.sp: SPHead has no argument 'num_contex'; did you mean 'num_context'\?"
    ):
        build_model(load_config(path, ["model.head_args.sp.num_contex=1"]))


def test_exponent_floats_without_a_dot(tmp_path):
    """PyYAML reads 1e-4 as a string (YAML 1.1); float keys accept it anyway."""
    path = _write(tmp_path, "c.yaml", "optim:\n  weight_decay: 1e-4\n")
    cfg = load_config(path, ["optim.lr=2e-3"])
    assert cfg.optim.weight_decay == 1e-4 and cfg.optim.lr == 2e-3
    with pytest.raises(ConfigError, match="train.max_iters = '1e3' must be an integer"):
        load_config(path, ["train.max_iters=1e3"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("eval.crop_size=[0, 256]", "eval.crop_size[0] = 0 must be >= 1"),
        ("eval.stride=[256, 0]", "eval.stride[1] = 0 must be >= 1"),
        ("eval.scales=[]", "eval.scales = [] must have at least 1 value(s) (e.g. [1.0], or"),
        ("eval.scales=[1.0, -0.5]", "eval.scales[1] = -0.5 must be > 0 (e.g. [1.0], or"),
        ("eval.resize_to=[2048, 0]", "eval.resize_to[1] = 0 must be >= 1"),
        ("eval.base_size=0", "eval.base_size = 0 must be >= 1"),
        ("eval.window_batch=0", "eval.window_batch = 0 must be >= 1"),
        (
            "eval.stride=[300, 200]",
            "eval.stride = [300, 200] is larger than eval.crop_size = [256, 256], so the windows would leave pixels "
            "out; set a stride <= the crop",
        ),
    ],
)
def test_eval_protocol_bounds_are_checked_at_load(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "configs/demo.yaml", [override])
    assert str(err.value).startswith(f"{ROOT / 'configs/demo.yaml'}: {message}")


def test_replace_checked_names_the_source_of_each_value():
    from utils.config import replace_checked

    cfg = load_config(ROOT / "configs/demo.yaml")
    sources = {"crop_size": "--crop", "stride": "--stride", "fast": "--fuse"}
    new = replace_checked(cfg, "eval", {"crop_size": [128, 128], "stride": [100, 100]}, sources)
    assert (new.eval.crop_size, new.eval.stride, new.eval.base_size) == ((128, 128), (100, 100), None)
    assert replace_checked(cfg, "eval", {"fast": {"fold_bn": False}}, sources).eval.fast.strip_conv is True
    assert replace_checked(cfg, "eval", {}, sources) is cfg
    with pytest.raises(ConfigError, match=r"^--crop: eval.crop_size\[1\] = 0 must be >= 1$"):
        replace_checked(cfg, "eval", {"crop_size": [128, 0]}, sources)
    with pytest.raises(ConfigError, match=r"^--crop: eval.stride = \[170, 170\] is larger than eval.crop_size"):
        replace_checked(load_config(ROOT / "configs/demo.yaml", ["eval.stride=[170, 170]"]), "eval",
                        {"crop_size": [128, 128]}, sources)  # fmt: skip


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.max_iters=0", "train.max_iters = 0 must be >= 1"),
        ("train.max_iters=-5", "train.max_iters = -5 must be >= 1"),
        ("train.log_interval=0", "train.log_interval = 0 must be >= 1"),
        ("train.checkpoint_interval=0", "train.checkpoint_interval = 0 must be >= 1"),
        ("train.eval_interval=-1", "train.eval_interval = -1 must be >= 0 (0: validate only at the end)"),
        ("train.keep_checkpoints=-2", "train.keep_checkpoints = -2 must be >= 0 (0: only last.pth and best.pth)"),
        ("train.eval_max_images=0", "train.eval_max_images = 0 must be >= 1 (null: every validation image)"),
        ("train.epochs=0", "train.epochs = 0.0 must be > 0"),
        ("train.batch_size=0", "train.batch_size = 0 must be >= 1"),
        ("optim.lr=-0.1", "optim.lr = -0.1 must be > 0"),
        ("data.augment.flip_prob=1.5", "data.augment.flip_prob = 1.5 must be >= 0 and <= 1"),
        ("model.num_classes=0", "model.num_classes = 0 must be >= 1"),
    ],
)
def test_config_ranges_are_checked_at_load_with_the_key_named(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "configs/demo.yaml", [override])
    assert str(err.value) == f"{ROOT / 'configs/demo.yaml'}: {message}"


def test_valid_edge_values_load():
    cfg = load_config(
        ROOT / "configs/demo.yaml",
        ["train.eval_interval=0", "train.keep_checkpoints=0", "train.eval_max_images=null", "train.max_iters=1"],
    )
    assert (cfg.train.eval_interval, cfg.train.keep_checkpoints, cfg.train.eval_max_images) == (0, 0, None)
