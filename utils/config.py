"""Typed configuration: YAML files with ``_base_`` inheritance and ``key.sub=value`` overrides.

The dataclasses below are the schema and the documentation of every key. ``load_config`` is the
only place YAML is parsed: it merges the base files (later wins), applies command-line overrides,
then checks every key and type against the schema, so a typo fails at load time with the nearest
valid key instead of silently doing nothing.

Sections merge key by key. The ``*_args`` tables hold keyword arguments per name
(``head_args: {sp: {...}, ppm: {...}}``), so the arguments of every head (attention, block conv)
live side by side and switching ``model.head=ppm`` never hands the SP head's arguments to PPM; they
merge name by name and argument by argument (an argument's value is replaced whole).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from .loss_terms import parse_terms
from .protocol import Protocol
from .results import atomic_write
from .schema import ConfigError, NamedArgs, bounded, build, field_value, is_switch, merge, set_dotted, to_plain


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
    # activation checkpointing: in training, each block of these stages (1-4) keeps only its input and runs again
    # in the backward pass; same numbers, less memory, about a third more time (docs/training.md)
    checkpoint_stages: tuple[int, ...] = bounded((), min=1, max=4, hint="ResNet stages 1-4, e.g. [3, 4]")


@dataclass(frozen=True)
class ModelConfig:
    """The segmentor; defaults are SPNet-R50 for Cityscapes."""

    num_classes: int = bounded(19, min=1)
    norm: Literal["bn", "gn"] = "bn"  # BatchNorm (SyncBN under multi-GPU training) or GroupNorm
    norm_groups: int = bounded(32, min=1)  # GroupNorm groups
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: str = "sp"  # key of models.heads.HEADS; sp is the SP head of SPNet
    head_args: NamedArgs = field(default_factory=dict)  # per head name, e.g. {sp: {num_context: 1}}
    aux_head: str | None = "fcn"  # on the penultimate stage (3) unless its args set in_stage; null for none
    aux_head_args: NamedArgs = field(default_factory=dict)
    checkpoint_heads: bool = False  # activation checkpointing of the head and the aux head (as checkpoint_stages)


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
    max_image_pixels: int | None = bounded(None, min=1)  # larger images / masks are refused; null: Pillow's limit
    # train.py reads every mask of train_split and val_split before it writes anything: a value, colour or
    # convention (reduce_zero_label without a 0) that does not fit is one error then, not hours later
    check_masks: bool = True


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
    """``utils/losses.py``: the main loss (``type``, or a weighted sum of ``terms``) plus the weighted aux loss."""

    type: Literal["ce", "ohem"] = "ce"  # the main loss when ``terms`` is null
    # weighted sum of losses, e.g. [{name: ce, weight: 1.0}, {name: dice, weight: 0.5}]; names: ce, ohem,
    # focal (option gamma: 2.0), dice (option smooth: 1.0), lovasz. null: ``type`` alone
    terms: tuple[dict[str, Any], ...] | None = None
    aux_weight: float = bounded(0.4, min=0)  # the aux output's loss (the same terms, ohem as ce) x this
    # one weight per class, or {auto: median_frequency | inverse_sqrt | enet_log} from the training split's
    # pixel frequencies (datasets/statistics.py); null: all 1. Also the alpha of the focal loss
    class_weight: tuple[float, ...] | dict[str, str] | None = None
    ohem_thresh: float = bounded(
        0.7, above=0, max=1
    )  # OHEM: keep pixels whose true-class probability is below this ...
    ohem_min_kept: int = bounded(100_000, min=0)  # ... and at least this many hardest pixels per micro-batch

    @classmethod
    def check_fields(cls, values: dict[str, Any], prefix: str, source: str) -> None:
        """The terms and the class-weight method are checked at load, with the key that is wrong."""
        terms, weight = values["terms"], values["class_weight"]
        if terms is not None:
            try:
                parse_terms(terms, f"{prefix}terms")
            except ValueError as err:
                raise ConfigError(f"{source}: {err}") from None
            if values["type"] != "ce":
                raise ConfigError(
                    f"{source}: {prefix}type = {values['type']!r} and {prefix}terms are both set; put "
                    f"{{name: {values['type']}}} in {prefix}terms and leave {prefix}type at ce"
                )
        if isinstance(weight, dict) and (list(weight) != ["auto"] or weight["auto"] not in BALANCING):
            raise ConfigError(
                f"{source}: {prefix}class_weight = {weight!r} must be a list of weights, one per class, or "
                f"{{auto: METHOD}} with METHOD one of {list(BALANCING)}"
            )


BALANCING = ("median_frequency", "inverse_sqrt", "enet_log")  # datasets/statistics.py: class_weights


@dataclass(frozen=True)
class FastPaths:
    """Fast paths that keep the math exact, each on or off (``utils/fast_paths.py``, docs/benchmarks.md).

    ``train.fast=false`` / ``eval.fast=false`` turns all of them off (the plain path); ``true`` all on.
    The single fields are for experts measuring one path (``train.fast.strip_conv=false``).
    """

    switch: ClassVar[bool] = True  # ``fast: false`` sets every field (utils/schema.py)
    reuse_memory: bool = True  # keep freed memory for reuse, no page faults every step (glibc; CPU steps)
    strip_conv: bool = True  # the (3, 1) strip convs as 1-D convs, which the CPU backends take
    strip_pool: bool = True  # strip pooling on channels_last CPU maps with NHWC kernels (mean over H / W is slow)
    inference_mode: bool = True  # torch.inference_mode for inference (validation, eval.py); else no_grad
    fold_bn: bool = True  # inference folds conv+BN pairs (and ACNet blocks) into one conv (eval.py --fuse)
    channels_last: bool = True  # NHWC tensors on CUDA and CPU, training and inference: measured faster or even


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
    # fine-tuning into other classes: "by_name" or {new class: old class} (names or ids) copies the matching
    # classifier rows of load_from; null: classifiers of another class count start fresh (docs/training.md)
    class_map: str | dict[str | int, str | int] | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = bounded(4, min=0)  # DataLoader workers per process, in training and in eval.py
    seed: int = 0
    deterministic: bool = False  # deterministic algorithms (slower on GPU); exact resume needs it on GPU
    amp: Literal["none", "fp16", "bf16"] = "none"  # fp16 (CUDA, with gradient scaling) or bf16 autocast
    fast: FastPaths = field(default_factory=FastPaths)  # exact fast paths; train.fast=false: none
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
class EvalConfig(Protocol):
    """The test protocol (its keys: ``utils/protocol.py``; eval.py's flags override them) and how fast it runs.

    Defaults: the official SPNet test (long side 2048, 768x768 sliding window, single scale, flip).
    """

    amp: Literal["none", "fp16", "bf16"] = "none"
    fast: FastPaths = field(default_factory=FastPaths)  # exact fast paths of eval.py / predict.py; false: none
    compile: bool = False  # torch.compile the model for inference (compiled once per input size)


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# Keys that were removed or renamed: the error says what replaced them.
REMOVED_KEYS = {
    "train.channels_last": "train.fast.channels_last (true / false) sets NHWC for training",
    "eval.channels_last": "eval.fast.channels_last (true / false) sets NHWC for inference",
}


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read ``path`` (resolving ``_base_`` files), apply ``key.sub=value`` overrides, validate."""
    raw = _read_yaml_tree(Path(path), chain=())
    for override in overrides:
        _apply_override(raw, override)
    _refuse_removed_keys(raw, str(path))
    cfg = build(Config, raw, prefix="", source=str(path))
    _check_run_length(cfg, overrides)
    return cfg


def _check_run_length(cfg: Config, overrides: Sequence[str]) -> None:
    """``train.max_iters=N`` typed on the command line would be silently ignored under ``train.epochs``."""
    typed = [o for o in overrides if o.partition("=")[0].strip() == "train.max_iters"]
    if typed and cfg.train.epochs is not None:
        raise ConfigError(
            f"{typed[-1]} has no effect: train.epochs = {cfg.train.epochs} sets the run's length; "
            "add train.epochs=null to count in iterations"
        )


def replace_checked(cfg: Config, section: str, values: dict[str, Any], sources: dict[str, str]) -> Config:
    """``cfg`` with keys of ``section`` set to ``values`` (e.g. from command-line flags), checked as
    ``load_config`` checks them: each value alone, its error named by ``sources[key]`` (its flag), then the
    section as a whole. A nested section takes a mapping of some of its keys, e.g. ``{"fast": {"fold_bn": False}}``."""
    if not values:
        return cfg
    cls = type(getattr(cfg, section))
    for key, value in values.items():
        field_value(cls, key, value, f"{section}.{key}", sources[key])
    raw = config_to_dict(cfg)
    raw[section] = merge(raw[section], values, cls)
    return build(Config, raw, prefix="", source=", ".join(sources[key] for key in values))


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    """Validate a plain dict (e.g. the config stored in a checkpoint) into a ``Config``."""
    return build(Config, data, prefix="", source=source)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict with lists instead of tuples, fit for YAML, JSON and checkpoints."""
    return to_plain(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    with atomic_write(path) as f:  # replaces a symbolic link at path, never writes through it
        f.write(_dump(config_to_dict(cfg)))


class _Dumper(yaml.SafeDumper):
    """Sections as blocks, lists on one line (``crop_size: [768, 768]``): a config reads as it is written."""


_Dumper.add_representer(list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, True))


def _dump(data: dict[str, Any]) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)


def format_config(cfg: Config, full: bool = False) -> str:
    """The resolved config as YAML: every key, or (default) the keys set to other values than the defaults."""
    if full:
        text = _dump(config_to_dict(cfg))
    else:
        text = "# the keys set to other values than the defaults (utils/config.py); --print-full-config shows all\n"
        text += _dump(config_differences(cfg))
    if cfg.train.epochs is not None:
        text += f"# train.epochs = {cfg.train.epochs} sets the run's length at start (from the training set's size)\n"
        text += "# in place of train.max_iters; the train log's first lines give the iterations\n"
    return text


def config_differences(cfg: Any, base: Any = None) -> dict[str, Any]:
    """The keys of ``cfg`` whose values differ from ``base`` (default: the schema's defaults), nested as
    in the config; a switch section whose fields all equal one value is that value (``fast: true``)."""
    base = Config() if base is None else base
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value, default = getattr(cfg, f.name), getattr(base, f.name)
        if not dataclasses.is_dataclass(value):
            if value != default:
                out[f.name] = to_plain(value)
            continue
        nested = config_differences(value, default)
        switches = set(to_plain(value).values()) if is_switch(type(value)) else ()
        if nested:
            out[f.name] = switches.pop() if len(switches) == 1 else nested  # a switch section as one value: fast: false
    return out


def changed_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two plain config dicts differ. A key missing on one side counts as None: a key
    added to the schema later, off (None) by default, does not set a result written before it apart."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(a.keys() | b.keys()) for d in changed_keys(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


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
        merged = merge(merged, _read_yaml_tree(path.parent / base, chain + (path,)), Config)
    return merge(merged, data, Config)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's message on one line: where (1-based, as editors count) and what, without its source excerpt."""
    mark = getattr(err, "problem_mark", None)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = ": ".join(filter(None, (getattr(err, "context", None), getattr(err, "problem", None)))) or str(err)
    return f"{where}: not valid YAML: {' '.join(what.split())}"


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r} must look like key.sub=value, e.g. model.backbone.depth=101")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {override!r}: cannot parse value {text!r}{_yaml_problem(err)}") from err
    if key in REMOVED_KEYS:
        raise ConfigError(f"override {override!r}: {key} is gone; {REMOVED_KEYS[key]}")
    set_dotted(raw, key, value, Config, "command-line override")


def _refuse_removed_keys(raw: dict[str, Any], source: str) -> None:
    for key, replacement in REMOVED_KEYS.items():
        section, _, name = key.partition(".")
        if isinstance(raw.get(section), dict) and name in raw[section]:
            raise ConfigError(f"{source}: {key} is gone; {replacement}")
