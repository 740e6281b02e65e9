"""Typed configuration: YAML files with ``_base_`` inheritance and ``key.sub=value`` overrides.

The dataclasses below are the schema and the documentation of every key. ``load_config`` is the
only place YAML is parsed: it merges the base files (later wins), applies command-line overrides,
then checks every key and type against the schema, so a typo fails at load time with the nearest
valid key instead of silently doing nothing.

Sections merge key by key. The ``*_args`` tables hold keyword arguments per name
(``head_args: {mpm: {...}, ppm: {...}}``), so the arguments of every head (attention, block conv)
live side by side and switching ``model.head=ppm`` never hands the SP head's arguments to PPM; they
merge name by name and argument by argument (an argument's value is replaced whole).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; the message says where and how to fix it."""


NamedArgs = dict[str, dict[str, Any]]  # name -> keyword arguments of the class that name selects


def bounded(
    default: Any,
    *,
    min: float | None = None,
    max: float | None = None,
    above: float | None = None,
    min_items: int | None = None,
    hint: str = "",
) -> Any:
    """A field whose value (when not null) must lie in [min, max] and above ``above``: checked at load.

    For a list, every item must; ``min_items``: the fewest items it may have."""
    return field(
        default=default, metadata={"min": min, "max": max, "above": above, "min_items": min_items, "hint": hint}
    )


@dataclass(frozen=True)
class BackboneConfig:
    """Dilated ResNet (``models.backbones.ResNet``); defaults are the official SPNet-R50 backbone."""

    depth: int = 50  # 18, 34, 50, 101 or 152
    stage_blocks: tuple[int, ...] | None = None  # override the depth's blocks per stage (small test models)
    base_width: int = 64  # stem and stage widths scale with it (64 = standard ResNet)
    deep_stem: bool = True  # three 3x3 convs (official SPNet, PyTorch-Encoding weights) or one 7x7 (torchvision)
    output_stride: Literal[8, 16, 32] = 8
    multi_grid: tuple[int, ...] | None = (1, 2, 4)  # stage-4 dilation multipliers, one per block
    attention: str | None = "strip"  # key of models.modules.BLOCK_ATTENTION; null for none
    attention_args: NamedArgs = field(default_factory=dict)  # per attention name, e.g. {se: {reduction: 8}}
    attention_placement: str | tuple[tuple[int, ...], ...] = "official"  # official | all | last | none | lists
    # mid: before the block's last conv (SPNet); post: before the residual add (SE, CBAM, GC);
    # out: after the add, i.e. on the block's output (BAM at stage boundaries with placement last)
    attention_position: Literal["mid", "post", "out"] = "mid"
    block_conv: str | None = None  # key of models.modules.BLOCK_CONVS replacing the blocks' 3x3 conv; null: dense
    block_conv_args: NamedArgs = field(default_factory=dict)  # per block conv name, e.g. {sk: {groups: 32}}
    block_conv_placement: str | tuple[tuple[int, ...], ...] = "all"  # which blocks, as attention_placement
    pretrained: str | None = None  # ImageNet init: a local file, or a torchvision weights name


@dataclass(frozen=True)
class ModelConfig:
    """The segmentor; defaults are SPNet-R50 for Cityscapes."""

    num_classes: int = bounded(19, min=1)
    norm: Literal["bn", "gn"] = "bn"  # BatchNorm (SyncBN under multi-GPU training) or GroupNorm
    norm_groups: int = bounded(32, min=1)  # GroupNorm groups
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: str = "mpm"  # key of models.heads.HEADS; mpm is the SP head of SPNet
    head_args: NamedArgs = field(default_factory=dict)  # per head name, e.g. {mpm: {num_context: 1}}
    aux_head: str | None = "fcn"  # on the penultimate stage (3) unless its args set in_stage; null for none
    aux_head_args: NamedArgs = field(default_factory=dict)


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation (``datasets.transforms.train_transforms``); defaults: official Cityscapes recipe."""

    crop_size: tuple[int, int] = (768, 768)  # (H, W); smaller images are padded (mean colour / ignore)
    scale_range: tuple[float, float] = (0.5, 1.75)  # factor of each image's own size
    rotate_range: tuple[float, float] = (-1.0, 1.0)  # degrees; [0, 0] disables
    blur_prob: float = bounded(0.5, min=0, max=1)  # 5x5 Gaussian blur
    flip_prob: float = bounded(0.5, min=0, max=1)  # horizontal flip
    photometric: bool = False  # brightness / contrast / saturation / hue jitter


@dataclass(frozen=True)
class DataConfig:
    """Dataset and input pipeline; ``root`` is the dataset folder as it downloads."""

    dataset: str = "cityscapes"  # key of datasets.DATASETS: cityscapes | ade20k | folder
    root: str = "data/cityscapes"
    dataset_args: dict[str, Any] = field(default_factory=dict)  # e.g. label_type, classes, allow_unpaired
    train_split: str = "train"  # several with "+", e.g. train+train_extra (Cityscapes coarse)
    val_split: str = "val"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # ImageNet statistics, RGB in [0, 1]
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class OptimConfig:
    """SGD + poly schedule (``utils/optim.py``); defaults: official Cityscapes recipe (batch 8)."""

    lr: float = bounded(0.005, above=0)  # backbone LR; official: 0.005 Cityscapes (batch 8), 0.01 ADE20K (batch 16)
    head_lr_mult: float = bounded(10.0, min=0)  # SP head and aux head train at lr * head_lr_mult
    momentum: float = bounded(0.9, min=0, max=1)
    weight_decay: float = bounded(1e-4, min=0)
    nesterov: bool = False
    power: float = bounded(0.9, min=0)  # poly decay (1 - it / max_iters) ** power, every iteration
    warmup_iters: int = bounded(0, min=0)  # linear warmup (the official recipe has none)
    warmup_ratio: float = bounded(0.1, min=0, max=1)  # warmup starts at warmup_ratio * lr
    # LR multipliers by parameter name, as MMSegmentation's paramwise_cfg.custom_keys: a parameter whose
    # name contains a key trains at lr * mult (the longest matching key wins; it replaces head_lr_mult),
    # e.g. {attention: 10} for block attention trained from scratch inside an ImageNet backbone.
    custom_lr_mults: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LossConfig:
    """``utils/losses.py``: cross-entropy with ignore (255), or OHEM, plus the weighted aux loss."""

    type: Literal["ce", "ohem"] = "ce"
    aux_weight: float = bounded(0.4, min=0)
    ohem_thresh: float = bounded(
        0.7, above=0, max=1
    )  # OHEM: keep pixels whose true-class probability is below this ...
    ohem_min_kept: int = bounded(100_000, min=0)  # ... and at least this many hardest pixels per micro-batch


@dataclass(frozen=True)
class FastPaths:
    """Fast paths that keep the math exact, each on or off (``utils/fast_paths.py``, docs/benchmarks.md).

    ``train.fast=false`` / ``eval.fast=false`` turns all of them off (the plain path); ``true`` all on.
    """

    reuse_memory: bool = True  # keep freed memory for reuse, no page faults every step (glibc; CPU steps)
    strip_conv: bool = True  # the (3, 1) strip convs as 1-D convs, which the CPU backends take
    strip_pool: bool = True  # strip pooling on channels_last CPU maps with NHWC kernels (mean over H / W is slow)
    inference_mode: bool = True  # torch.inference_mode for inference (validation, eval.py); else no_grad
    fold_bn: bool = True  # inference folds conv+BN pairs (and ACNet blocks) into one conv (eval.py --fuse)
    channels_last: bool = True  # NHWC on CUDA and CPU, training and inference: measured faster or even


SWITCH_SECTIONS = (FastPaths,)  # sections a bare true / false may stand for: every field set to it


@dataclass(frozen=True)
class TrainConfig:
    """The loop of ``train.py``. Schedules are in iterations; one iteration = one global batch."""

    max_iters: int = bounded(40_000, min=1)
    # if set: max_iters = round(epochs x the official epoch), ceil(train images / GPUs) // per_device_batch with
    # GPUs = batch_size / per_device_batch, the recipe's, whatever runs it (datasets.sampler.iterations_per_epoch)
    epochs: float | None = bounded(None, above=0)
    batch_size: int = bounded(8, min=1)  # global, over all processes and accumulation steps
    per_device_batch: int | None = bounded(None, min=1)  # images per forward pass; null: batch_size / processes
    work_dir: str | None = None  # null: work_dirs/<config path under configs/ without .yaml>
    load_from: str | None = None  # start from these full-model weights (e.g. a converted official SPNet)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = bounded(4, min=0)  # DataLoader workers per process, in training and in eval.py
    seed: int = 0
    deterministic: bool = False  # deterministic algorithms (slower on GPU); exact resume needs it on GPU
    amp: Literal["none", "fp16", "bf16"] = "none"  # fp16 (CUDA, with gradient scaling) or bf16 autocast
    fast: FastPaths = field(default_factory=FastPaths)  # exact fast paths; train.fast=false: none
    channels_last: bool | None = None  # true / false: on / off everywhere; null: as train.fast.channels_last says
    compile: bool = False  # torch.compile the training step's model (slow to compile on CPUs; docs/benchmarks.md)
    sync_bn: bool = True  # BatchNorm -> SyncBatchNorm when training on several GPUs
    log_interval: int = bounded(20, min=1)
    checkpoint_interval: int = bounded(2000, min=1)  # also at the end and on SIGTERM / SIGINT
    keep_checkpoints: int = bounded(
        3, min=0, hint="0: only last.pth and best.pth"
    )  # newest iter_*.pth kept (last.pth and best.pth always)
    eval_interval: int = bounded(
        4000, min=0, hint="0: validate only at the end"
    )  # validation every N iterations (and at the end); 0: only at the end
    eval_max_images: int | None = bounded(
        None, min=1, hint="null: every validation image"
    )  # validate on the first N validation images only; null: all
    eval_pictures: int = bounded(4, min=0)  # validation images drawn to TensorBoard and val_predictions.png
    eval_protocol: Literal["whole", "config"] = "whole"  # whole image (fast) or the eval section's protocol


@dataclass(frozen=True)
class EvalConfig:
    """Test-time protocol (``utils/inference.py``); ``eval.py`` flags override it. Defaults: official SPNet."""

    profile: Literal["spnet", "encoding", "mmseg"] = "spnet"  # whose resize / pad / fuse rules
    mode: Literal["whole", "slide"] = "slide"
    crop_size: tuple[int, int] = bounded((768, 768), min=1)  # sliding window
    # null: the profile's (2/3 of the crop; mmseg: its configs' for the crop); at most the crop (no gaps)
    stride: tuple[int, int] | None = bounded(None, min=1)
    scales: tuple[float, ...] = bounded(
        (1.0,), above=0, min_items=1, hint="e.g. [1.0], or [0.5, 0.75, 1.0, 1.25, 1.5, 1.75] for multi-scale"
    )
    flip: bool | None = None  # null: the profile's (spnet and encoding flip, mmseg does not)
    base_size: int | None = bounded(2048, min=1)  # spnet / encoding: long side at scale 1.0; null: the image's own
    # mmseg: (long, short) keep-ratio target, its img_scale; null: own size
    resize_to: tuple[int, int] | None = bounded(None, min=1)
    window_batch: int = bounded(1, min=1)  # windows per forward pass (x2 with per-window flip); 1 was fastest on CPU
    amp: Literal["none", "fp16", "bf16"] = "none"
    fast: FastPaths = field(default_factory=FastPaths)  # exact fast paths of eval.py / predict.py; false: none
    channels_last: bool | None = None  # true / false: on / off everywhere; null: as eval.fast.channels_last says
    compile: bool = False  # torch.compile the model for inference (compiled once per input size)

    def check(self, prefix: str, source: str) -> None:
        """What one key's bounds cannot say: windows that leave no gaps."""
        if self.stride is not None and any(s > c for s, c in zip(self.stride, self.crop_size)):
            raise ConfigError(
                f"{source}: {prefix}stride = {list(self.stride)} is larger than {prefix}crop_size = "
                f"{list(self.crop_size)}, so the windows would leave pixels out; set a stride <= the crop "
                f"({prefix}stride, --stride H W), or {prefix}stride=null for the profile's"
            )


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read ``path`` (resolving ``_base_`` files), apply ``key.sub=value`` overrides, validate."""
    raw = _read_yaml_tree(Path(path), chain=())
    for override in overrides:
        _apply_override(raw, override)
    return _build(Config, raw, prefix="", source=str(path))


def replace_checked(cfg: Config, section: str, values: dict[str, Any], sources: dict[str, str]) -> Config:
    """``cfg`` with keys of ``section`` set to ``values`` (e.g. from command-line flags), checked as
    ``load_config`` checks them: each value alone, its error named by ``sources[key]`` (its flag), then the
    section as a whole. A nested section takes a mapping of some of its keys, e.g. ``{"fast": {"fold_bn": False}}``."""
    if not values:
        return cfg
    cls = _hints(Config)[section]
    for key, value in values.items():
        _field_value(cls, key, value, f"{section}.{key}", sources[key])
    raw = config_to_dict(cfg)
    raw[section] = _merge(raw[section], values, cls)
    return _build(Config, raw, prefix="", source=", ".join(sources[key] for key in values))


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    """Validate a plain dict (e.g. the config stored in a checkpoint) into a ``Config``."""
    return _build(Config, data, prefix="", source=source)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict with lists instead of tuples, fit for YAML, JSON and checkpoints."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(cfg))


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


# --- reading and merging -------------------------------------------------------------------------


def _read_yaml_tree(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in chain:
        raise ConfigError(f"{path}: _base_ cycle: {' -> '.join(map(str, chain + (path,)))}")
    if not path.is_file():
        referrer = f" (named in _base_ of {chain[-1]})" if chain else ""
        raise ConfigError(f"config file not found: {path}{referrer}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}{_yaml_problem(err)}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys, got {type(data).__name__}")
    bases = data.pop("_base_", [])
    bases = [bases] if isinstance(bases, str) else bases
    merged: dict[str, Any] = {}
    for base in bases:
        merged = _merge(merged, _read_yaml_tree(path.parent / base, chain + (path,)), Config)
    return _merge(merged, data, Config)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's message on one line: where (1-based, as editors count) and what, without its source excerpt."""
    mark = getattr(err, "problem_mark", None)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = ": ".join(filter(None, (getattr(err, "context", None), getattr(err, "problem", None)))) or str(err)
    return f"{where}: not valid YAML: {' '.join(what.split())}"


def _expand_switch(value: Any, cls: Any) -> Any:
    """``fast: false`` stands for every field of the section set to false (``SWITCH_SECTIONS``)."""
    if cls in SWITCH_SECTIONS and isinstance(value, bool):
        return {f.name: value for f in dataclasses.fields(cls)}
    return value


def _merge(base: dict[str, Any], child: dict[str, Any], cls: type) -> dict[str, Any]:
    """Key-by-key merge where the schema has a nested section; replacement everywhere else."""
    hints = _hints(cls)
    out = dict(base)
    for key, value in child.items():
        sub = hints.get(key)
        value = _expand_switch(value, sub)
        if dataclasses.is_dataclass(sub) and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, sub)
        elif sub == NamedArgs and isinstance(value, dict) and isinstance(out.get(key), dict):
            named = dict(out[key])
            for name, args in value.items():
                both = isinstance(args, dict) and isinstance(named.get(name), dict)
                named[name] = {**named[name], **args} if both else args
            out[key] = named
        else:
            out[key] = value
    return out


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r} must look like key.sub=value, e.g. model.backbone.depth=101")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {override!r}: cannot parse value {text!r}{_yaml_problem(err)}") from err
    node, cls = raw, Config
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        hints = _hints(cls) if cls is not None else None
        if hints is not None and part not in hints:
            _unknown_key(".".join(parts[: i + 1]), part, hints, "command-line override")
        sub_cls = hints.get(part) if hints is not None else None
        node[part] = _expand_switch(node.get(part), sub_cls)
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
        cls = sub_cls if dataclasses.is_dataclass(sub_cls) else None
    last = _hints(cls).get(parts[-1]) if cls is not None else None
    if isinstance(node.get(parts[-1]), dict) and last in SWITCH_SECTIONS and isinstance(value, dict):
        value = _merge(node[parts[-1]], value, last)  # train.fast={strip_conv: false} keeps the other fields
    node[parts[-1]] = _expand_switch(value, last)


# --- validation ----------------------------------------------------------------------------------


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unknown_key(path: str, key: str, valid: Sequence[str], source: str) -> typing.NoReturn:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"{source}: unknown key {path!r}{hint} Valid keys here: {', '.join(valid)}")


def _build(cls: type, data: Any, prefix: str, source: str) -> Any:
    if not isinstance(data, dict):
        where = prefix.rstrip(".") or "top level"
        if cls in SWITCH_SECTIONS:
            keys = ", ".join(f.name for f in dataclasses.fields(cls))
            raise ConfigError(f"{source}: {where} = {data!r} must be true, false or a mapping of {keys}")
        raise ConfigError(f"{source}: {where} must be a mapping, got {data!r}")
    hints = _hints(cls)
    for key in data:
        if key not in hints:
            _unknown_key(prefix + str(key), str(key), list(hints), source)
    built = cls(**{key: _field_value(cls, key, value, prefix + key, source) for key, value in data.items()})
    if hasattr(built, "check"):
        built.check(prefix, source)
    return built


def _field_value(cls: type, key: str, value: Any, path: str, source: str) -> Any:
    """``value`` checked against the type and the bounds of the field ``key`` of ``cls``."""
    value = _coerce(value, _hints(cls)[key], path, source)
    bounds = next(f.metadata for f in dataclasses.fields(cls) if f.name == key)
    if value is not None and bounds:
        _check_range(value, bounds, path, source)
    return value


def _check_range(value: Any, bounds: typing.Mapping[str, Any], path: str, source: str) -> None:
    hint = f" ({bounds['hint']})" if bounds.get("hint") else ""
    if isinstance(value, tuple):
        fewest = bounds.get("min_items")
        if fewest is not None and len(value) < fewest:
            raise ConfigError(f"{source}: {path} = {list(value)} must have at least {fewest} value(s){hint}")
        for i, item in enumerate(value):
            _check_range(item, bounds, f"{path}[{i}]", source)
        return
    low, high, above = bounds.get("min"), bounds.get("max"), bounds.get("above")
    if (
        (low is not None and value < low)
        or (high is not None and value > high)
        or (above is not None and value <= above)
    ):
        lower = f"> {above}" if above is not None else f">= {low}" if low is not None else ""
        upper = f"<= {high}" if high is not None else ""
        raise ConfigError(f"{source}: {path} = {value!r} must be {' and '.join(filter(None, (lower, upper)))}{hint}")


def _coerce(value: Any, tp: Any, path: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; turn lists into tuples where asked."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, _expand_switch(value, tp), path + ".", source)
    if origin in (Union, types.UnionType):
        for option in args:
            try:
                return _coerce(value, option, path, source)
            except ConfigError:
                pass
        raise ConfigError(f"{source}: {path} = {value!r} must be {_type_name(tp)}")
    if origin is Literal:
        if value in args and not isinstance(value, bool):
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{source}: {path} = {value!r} must be one of {list(args)}{hint}")
    if tp is type(None):
        if value is None:
            return None
    elif tp is Any:
        return value
    elif origin is tuple:
        if isinstance(value, (list, tuple)):
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_coerce(v, args[0], f"{path}[{i}]", source) for i, v in enumerate(value))
            if len(value) == len(args):
                return tuple(_coerce(v, a, f"{path}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))
    elif origin is dict or tp is dict:
        if isinstance(value, dict):
            key_type, value_type = args or (Any, Any)
            for k in value:
                if key_type is str and not isinstance(k, str):
                    raise ConfigError(f"{source}: {path} has key {k!r}; keys must be strings (names)")
            if tp == NamedArgs and not all(isinstance(v, dict) for v in value.values()):
                raise ConfigError(
                    f"{source}: {path} holds one mapping of arguments per name, e.g. "
                    f"{path.rsplit('.', 1)[-1]}: {{name: {{argument: value}}}}; got {value!r}"
                )
            return {k: _coerce(v, value_type, f"{path}.{k}", source) for k, v in value.items()}
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return float(value)  # PyYAML (YAML 1.1) reads 1e-4 without a dot as a string
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp in (str, bool):
        if isinstance(value, tp):
            return value
    else:  # pragma: no cover - a schema annotation this function does not know
        raise TypeError(f"unsupported config annotation {tp!r} for {path}")
    raise ConfigError(f"{source}: {path} = {value!r} must be {_type_name(tp)}")


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _type_name(tp: Any, plural: bool = False) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a, plural) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"{'lists' if plural else 'a list'} of {_type_name(args[0], plural=True)}"
        return f"a list of {len(args)} values"
    if plural:
        if origin is dict or tp is dict:
            return "mappings"
        return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(tp, str(tp))
    if origin is Literal:
        return f"one of {list(args)}"
    if tp is type(None):
        return "null"
    if origin is dict or tp is dict:
        if args and args[1] is not Any:
            return f"a mapping of names to {_type_name(args[1], plural=True)}"
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))
