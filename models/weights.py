"""Loading weights: strict by default, with an explicit allow-list and a report of what came from where.

A load either fills every parameter the allow-list does not exempt, or fails with one message that
lists the missing keys, the unexpected keys and the shape mismatches, and describes both layouts;
a silent partial load (``strict=False``) never happens here.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from utils import checkpoint as utils_checkpoint

from .convert import (
    StateDict,
    convert_imagenet_resnet,
    describe_layout,
    describe_resnet,
    detect_stem,
    unwrap_state_dict,
)

# torchvision names its files "<model>-<first hex digits of the file's SHA-256>.pth" (torch.hub.HASH_REGEX)
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{6,})\.")


class IncompatibleWeightsError(ValueError):
    """Weights that do not fit the model; the message lists every difference and the likely fix."""


@dataclass(frozen=True)
class KnownWeights:
    format: str
    depth: int
    sha1: str  # the checksum the publisher distributes with the file
    provenance: str


# PyTorch-Encoding's ImageNet ResNets, the initialisation of the official SPNet. The original links
# (https://hangzh.s3.amazonaws.com/encoding/models/<name>.zip) are dead; copies: the SPNet author's
# Google Drive folder linked from github.com/Andrew-Qibin/SPNet, and the SegmenTron release
# https://github.com/LikeLy-Journey/SegmenTron/releases/download/v0.1.0/<name>.pth. Verify a copy
# with `sha1sum`: PyTorch-Encoding publishes SHA-1 (its file names carry the first 8 hex digits).
# No SHA-256 was ever published; we print the SHA-256 of whatever file is loaded (load report,
# checkpoint metadata) so a verified copy can be pinned by it.
KNOWN_WEIGHTS: dict[str, KnownWeights] = {
    "resnet50-25c4b509.pth": KnownWeights(
        "encoding-resnet",
        50,
        "25c4b50959ef024fcc050213a06b614899f94b3d",
        "PyTorch-Encoding ImageNet ResNet-50 (deep stem)",
    ),
    "resnet101-2a57e44d.pth": KnownWeights(
        "encoding-resnet",
        101,
        "2a57e44de9c853fa015b172309a1ee7e2d0e4e2a",
        "PyTorch-Encoding ImageNet ResNet-101 (deep stem)",
    ),
    "resnet152-0d43d698.pth": KnownWeights(
        "encoding-resnet",
        152,
        "0d43d698c66aceaa2bc0309f55efdd7ff4b143af",
        "PyTorch-Encoding ImageNet ResNet-152 (deep stem)",
    ),
}


@dataclass
class LoadReport:
    """What a load did, for the log: which tensors came from the file and which kept their init."""

    source: str
    sha256: str | None
    loaded: list[str]
    kept_init: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    config: dict[str, Any] | None = None  # the config a training checkpoint was written with (train.seed, ...)
    iteration: int | None = None  # the training iteration it holds
    classifiers: str | None = None  # fine-tuning into other classes: which rows were copied, which re-initialised

    def __str__(self) -> str:
        digest = f" (sha256 {self.sha256})" if self.sha256 else ""
        lines = [f"loaded {len(self.loaded)} tensors from {self.source}{digest}"]
        if self.kept_init:
            modules = _summarise(sorted({_owner(k) for k in self.kept_init}))
            count = len(self.kept_init)
            lines.append(f"  not initialised by the file (kept their own initialisation): {count} tensors in {modules}")
        if self.dropped:
            lines.append(f"  ignored from the file (allowed): {_summarise(self.dropped)}")
        if self.classifiers:
            lines.append(f"  {self.classifiers}")
        return "\n".join(lines)


def _owner(key: str) -> str:
    """``layer4.0.attention.conv_h.weight`` -> ``layer4.0.attention`` (also ``.conv2.`` block convs)."""
    for part in (".attention.", ".conv2."):
        if part in key:
            return key.split(part)[0] + part.rstrip(".")
    return key.rsplit(".", 1)[0]


def _summarise(names: list[str], shown: int = 12) -> str:
    more = f" ... and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def file_digests(path: str | Path, algorithms: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
    """Hex digests of a file, read once in 1 MiB chunks."""
    hashes = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            for h in hashes.values():
                h.update(chunk)
    return {name: h.hexdigest() for name, h in hashes.items()}


def read_checkpoint(path: str | Path, what: str = "checkpoint") -> Any:
    """``utils.checkpoint.read_checkpoint`` for weights files: an unreadable file is an
    ``IncompatibleWeightsError`` that asks whether the download is complete (not for a complete file
    that holds objects other than weights)."""
    try:
        return utils_checkpoint.read_checkpoint(path, what)
    except utils_checkpoint.NotWeightsError as err:
        raise IncompatibleWeightsError(str(err)) from err.__cause__
    except utils_checkpoint.CheckpointReadError as err:
        raise IncompatibleWeightsError(
            f"{err}; is the download complete? Compare its checksum with the published one."
        ) from err.__cause__


def check_state_dict(
    module: nn.Module,
    state_dict: StateDict,
    *,
    source: str,
    allow_missing: Callable[[str], bool] = lambda key: False,
    describe: Callable[[], str] | None = None,
) -> list[str]:
    """Raise one readable error listing every difference between ``state_dict`` and ``module``.

    ``allow_missing(key)`` exempts model keys the file cannot have (e.g. attention modules that
    ImageNet weights lack). Returns the exempted keys, which keep their initialisation. Works on
    ``meta``-device modules, so a layout can be checked without allocating the model.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict and not allow_missing(k)]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        parts = [f"{source} does not fit the model:"]
        for title, keys in (
            ("missing in the file", missing),
            ("unexpected in the file", unexpected),
            ("shape mismatches", mismatched),
        ):
            if keys:
                shown = "\n    ".join(keys[:8]) + (f"\n    ... and {len(keys) - 8} more" if len(keys) > 8 else "")
                parts.append(f"  {len(keys)} {title}:\n    {shown}")
        if describe is not None:
            parts.append(describe())
        raise IncompatibleWeightsError("\n".join(parts))
    return [k for k in expected if k not in state_dict]


def load_state_dict_checked(
    module: nn.Module,
    state_dict: StateDict,
    *,
    source: str,
    allow_missing: Callable[[str], bool] = lambda key: False,
    describe: Callable[[], str] | None = None,
) -> list[str]:
    """Strict ``load_state_dict`` whose failure lists every difference in one readable message."""
    kept = check_state_dict(module, state_dict, source=source, allow_missing=allow_missing, describe=describe)
    module.load_state_dict(state_dict, strict=False)  # every key was checked above
    return kept


def load_backbone_weights(backbone: nn.Module, source: str) -> LoadReport:
    """Initialise a ``ResNet`` from ImageNet weights: a local file or a torchvision weights name.

    Accepted files: PyTorch-Encoding / torchvision ImageNet ResNets as published (the layout is
    detected from the stem) and backbone files written by ``scripts/convert_checkpoint.py``.
    Block-attention parameters keep their initialisation (ImageNet weights cannot have them) and
    the ImageNet classifier is dropped; everything else must match exactly.
    """
    sha256 = None
    if os.path.exists(source):
        digests = file_digests(source, ("sha1", "sha256"))
        sha256 = digests["sha256"]
        known = KNOWN_WEIGHTS.get(Path(source).name)
        if known is not None and digests["sha1"] != known.sha1:
            raise IncompatibleWeightsError(
                f"{source}: SHA-1 {digests['sha1']} differs from the published {known.sha1} of "
                f"{Path(source).name} ({known.provenance}); the copy is corrupt or a different file"
            )
        obj = read_checkpoint(source, "backbone weights file")
    elif "_Weights." in source:
        obj, sha256 = _torchvision_state_dict(source)
    else:
        known = KNOWN_WEIGHTS.get(Path(source).name)
        hint = (
            f" It is {known.provenance} (SHA-1 {known.sha1}): docs/weights.md says where to download it."
            if known
            else ""
        )
        raise FileNotFoundError(
            f"model.backbone.pretrained: {source!r} is neither an existing file nor a torchvision weights "
            f"name such as 'ResNet50_Weights.IMAGENET1K_V1'.{hint} To train from scratch set "
            "model.backbone.pretrained=null."
        )

    if isinstance(obj, dict) and isinstance(obj.get("backbone"), dict):  # our converted file
        state_dict, dropped = obj["backbone"], []
    else:
        state_dict = unwrap_state_dict(obj)
        fmt = "encoding-resnet" if detect_stem(state_dict) == "deep" else "torchvision-resnet"
        state_dict, dropped = convert_imagenet_resnet(state_dict, fmt)

    model_stem = "deep" if isinstance(backbone.conv1, nn.Sequential) else "standard"
    file_stem = detect_stem(state_dict)
    if file_stem != model_stem:
        fix = (
            "set model.backbone.deep_stem=false to use torchvision ResNets"
            if file_stem == "standard"
            else "set model.backbone.deep_stem=true for PyTorch-Encoding ResNets"
        )
        raise IncompatibleWeightsError(
            f"{source} has the {file_stem} stem but the model has the {model_stem} stem: {fix}"
        )

    def describe() -> str:
        file_layout = describe_layout(describe_resnet(state_dict))
        return f"  file:  {file_layout}\n  model: {describe_layout(describe_resnet(backbone.state_dict()))}"

    state_dict, unfit = fit_dense_weights(backbone, state_dict)
    added = tuple(f"{name}." for name in backbone.added_modules())
    kept = load_state_dict_checked(
        backbone, state_dict, source=source, allow_missing=lambda key: key.startswith(added), describe=describe
    )
    return LoadReport(source, sha256, loaded=list(state_dict), kept_init=kept, dropped=dropped + unfit)


def fit_dense_weights(backbone: nn.Module, state_dict: StateDict) -> tuple[StateDict, list[str]]:
    """Move the dense 3x3 conv (and norm) weights of blocks whose conv is replaced into the new module.

    A block conv declares in ``DENSE_ALIASES`` which of its parts has the dense conv's (and, when
    it normalises its output, the dense norm's) layout; a tensor goes there when the shapes
    agree. The rest of the dense weights cannot be used: returned as "key (why)" for the report.
    """
    sd, unfit = dict(state_dict), []
    model_keys = backbone.state_dict()
    for name, module in backbone.added_modules().items():
        if not name.endswith(".conv2"):
            continue
        block = name[: -len(".conv2")]
        aliases = getattr(module, "DENSE_ALIASES", {})
        sources = {f"{block}.conv2.": aliases.get("conv")}
        if module.normalizes_output:  # the block has no norm after the conv: the dense bn2 goes inside
            sources[f"{block}.bn2."] = aliases.get("norm")
        for prefix, target in sources.items():
            reasons = set()
            for key in [k for k in sd if k.startswith(prefix)]:
                value = sd.pop(key)
                new_key = f"{name}.{target}.{key[len(prefix) :]}" if target else None
                if new_key in model_keys and model_keys[new_key].shape == value.shape:
                    sd[new_key] = value
                else:
                    reasons.add("no dense counterpart" if new_key not in model_keys else "shape differs")
            if reasons:
                unfit.append(f"{prefix}* ({type(module).__name__}: {', '.join(sorted(reasons))})")
    return sd, unfit


def _torchvision_state_dict(name: str) -> tuple[Any, str]:
    """Weights named like ``ResNet50_Weights.IMAGENET1K_V1`` and the SHA-256 of their file.

    The file is torchvision's, in the torch hub cache (``<torch.hub.get_dir()>/checkpoints/``, as
    torchvision keeps it), downloaded when absent. torchvision's own ``get_state_dict`` unpickles a
    cached file in full and checks its hash only on download, so a file planted in the cache would
    run its code; here the file's SHA-256 must start with the digits its name carries (torchvision's
    convention, ``resnet50-11ad3fa6.pth``) and it is read with ``weights_only=True``.
    """
    from torchvision.models import get_weight

    try:
        weights = get_weight(name)
    except (ValueError, KeyError, AttributeError) as err:
        raise ValueError(f"model.backbone.pretrained: unknown torchvision weights {name!r}: {err}") from err
    file = Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlparse(weights.url).path).name
    named = _HASH_IN_NAME.search(file.name)
    prefix = named.group(1) if named else None
    if not file.exists():
        file.parent.mkdir(parents=True, exist_ok=True)
        try:  # checks the hash of the download and moves it into place only when it matches
            torch.hub.download_url_to_file(weights.url, str(file), prefix, progress=False)
        except OSError as err:  # URLError is an OSError: no internet
            raise FileNotFoundError(
                f"could not fetch torchvision weights {name} from {weights.url} ({err}). Without internet, download "
                f"the file elsewhere and set model.backbone.pretrained to its local path, or put it in "
                f"{file.parent}/"
            ) from err
        except RuntimeError as err:  # torch.hub: invalid hash value
            raise IncompatibleWeightsError(f"the download of {weights.url} is not torchvision's file: {err}") from err
    sha256 = file_digests(file)["sha256"]
    if prefix and not sha256.startswith(prefix):
        raise IncompatibleWeightsError(
            f"{file}: SHA-256 {sha256} does not start with {prefix}, as the name of torchvision's file for {name} "
            "says: it is not that file (replaced, or damaged). Delete it; it is downloaded again"
        )
    return read_checkpoint(file, f"torchvision weights file for {name}"), sha256


def load_model_weights(
    model: nn.Module,
    source: str | Path,
    *,
    fine_tune: bool = False,
    classes: Sequence[str] | None = None,
    class_map: str | Mapping[str | int, str | int] | None = None,
    stored_classes: Callable[[dict], Sequence[str] | None] = lambda checkpoint: None,
) -> LoadReport:
    """Load a full-model checkpoint (ours, or converted by ``scripts/convert_checkpoint.py``), strictly.

    ``fine_tune`` (``train.load_from`` only; evaluation never): when the classifiers
    (``model.classifier_layers()``) have another class count than the file's, or ``class_map`` is
    given, they start from the model's own initialisation and ``class_map`` (``resolve_class_map``)
    copies the matching rows (weights and bias) from the file; everything else still loads strictly.
    ``classes``: the model's class names; the file's are its ``"classes"``, else
    ``stored_classes(checkpoint)`` (e.g. from its config).
    """
    obj = read_checkpoint(source, "model checkpoint")
    if isinstance(obj, dict) and "backbone" in obj and "model" not in obj:
        raise IncompatibleWeightsError(
            f"{source} holds backbone weights only; use it as model.backbone.pretrained, not as a model checkpoint"
        )
    state_dict = unwrap_state_dict(obj)
    meta = obj if isinstance(obj, dict) else {}

    def describe() -> str:
        saved = meta.get("config", {}).get("model")
        return f"  the checkpoint was written for: {saved}" if saved else "  (the checkpoint records no config)"

    classifiers = None
    if fine_tune:
        old_classes = meta.get("classes") or stored_classes(meta)
        state_dict, classifiers = fit_classifiers(model, state_dict, classes, old_classes, class_map, str(source))
    load_state_dict_checked(model, state_dict, source=str(source), describe=describe)
    config, iteration = meta.get("config"), meta.get("iter")
    return LoadReport(
        str(source), file_digests(source)["sha256"], loaded=list(state_dict), config=config, iteration=iteration,
        classifiers=classifiers,
    )  # fmt: skip


def fit_classifiers(
    model: nn.Module,
    state_dict: StateDict,
    classes: Sequence[str] | None,
    old_classes: Sequence[str] | None,
    class_map: str | Mapping[str | int, str | int] | None,
    source: str,
) -> tuple[StateDict, str | None]:
    """``state_dict`` with the classifiers' tensors replaced by the model's own, with the rows ``class_map``
    matches copied from the file; and the report line. Unchanged (and None) when the class counts agree
    and no map is given. Tensors that differ in more than the class count are left for the strict check."""
    layers = model.classifier_layers() if hasattr(model, "classifier_layers") else {}
    own = model.state_dict()
    keys = [f"{layer}.{part}" for layer in layers for part in ("weight", "bias") if f"{layer}.{part}" in own]
    fits = [k for k in keys if k in state_dict and state_dict[k].shape[1:] == own[k].shape[1:]]
    resized = [k for k in fits if state_dict[k].shape[0] != own[k].shape[0]]
    if not fits or (not resized and class_map is None):
        return state_dict, None
    old_count, new_count = state_dict[fits[0]].shape[0], own[fits[0]].shape[0]
    mapping = {}
    if class_map is not None:
        mapping = resolve_class_map(class_map, classes, old_classes, new_count, old_count, source)
    fitted = dict(state_dict)
    for key in fits:
        tensor = own[key].detach().clone()  # the model's initialisation for the rows without a match
        for new, old in mapping.items():
            tensor[new] = state_dict[key][old]
        fitted[key] = tensor

    def name(i: int, names: Sequence[str] | None) -> str:
        return names[i] if names is not None and i < len(names) else f"class {i}"

    copied = [
        name(n, classes) + ("" if name(n, classes) == name(o, old_classes) else f" <- {name(o, old_classes)}")
        for n, o in sorted(mapping.items())
    ]
    fresh = [name(i, classes) for i in range(new_count) if i not in mapping]
    hint = "" if class_map is not None else " (train.class_map copies the rows of matching classes)"
    line = (
        f"classifier {old_count} -> {new_count} classes ({', '.join(layers)}): rows copied for "
        f"{', '.join(copied) or 'none'}; re-initialised: {', '.join(fresh) or 'none'}{hint}"
    )
    return fitted, line


def resolve_class_map(
    class_map: str | Mapping[str | int, str | int],
    classes: Sequence[str] | None,
    old_classes: Sequence[str] | None,
    new_count: int,
    old_count: int,
    source: str,
) -> dict[int, int]:
    """``train.class_map`` as {new class id: checkpoint class id}. ``by_name``: the classes of the same name;
    a table ``{new class: checkpoint class}`` by names or ids. A class that its side does not have, or
    ``by_name`` without the checkpoint's class names, is a ``ValueError`` with the fix."""
    if class_map == "by_name":
        if old_classes is None:
            raise ValueError(
                f"train.class_map=by_name: {source} stores no class names (it predates them) and its config names no "
                "dataset whose classes are known; give an explicit table, train.class_map={new class: checkpoint "
                "class} (names or ids)"
            )
        if classes is None:
            raise ValueError("train.class_map=by_name needs the class names of the dataset being trained")
        return {i: list(old_classes).index(c) for i, c in enumerate(classes) if c in old_classes}
    if not isinstance(class_map, Mapping):
        raise ValueError(
            f"train.class_map = {class_map!r} must be by_name or a table {{new class: checkpoint class}} (names or ids)"
        )
    sides = {
        "new": (classes, new_count, "a class of the dataset being trained"),
        "old": (old_classes, old_count, f"a class of the checkpoint {source}"),
    }

    def index(value: str | int, side: str) -> int:
        names, count, what = sides[side]
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < count:
            return value
        if isinstance(value, str) and names is not None and value in names:
            return list(names).index(value)
        known = f"its classes: {', '.join(names)}" if names is not None else f"no names known: use ids 0-{count - 1}"
        raise ValueError(f"train.class_map: {value!r} is not {what} ({known}); fix the table's entry")

    return {index(new, "new"): index(old, "old") for new, old in class_map.items()}
