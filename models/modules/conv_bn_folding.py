"""Deploy-time folding of BatchNorm into the convolution before it (no paper).

``fold_conv_bn(conv, bn)``: an eval-mode BatchNorm is a per-channel affine map, so ``bn(conv(x))`` is one
conv: ``t = gamma / sqrt(running_var + eps)``, ``W' = t W``, ``b' = t (b - running_mean) + beta``. This
saves a pass over every feature map at inference, exactly up to rounding, in eval mode only. It is the
"fusing batchnorm and conv" note the plug-and-play survey cites, and ``torch.nn.utils.fuse_conv_bn_eval``.

``fold_model(model, example)``: the same for a whole eval-mode network, in place. It replaces every
submodule that has a ``fuse()`` method (e.g. ``ACBlock``) by its result, finds conv -> BN pairs by tracing
one forward pass with hooks, folds them and re-runs ``example``. Hooks cannot see functional uses
(``bn(y) + y``), so if the output changed it undoes the folding and retries pair by pair, keeping only the
pairs that leave the output unchanged.

Choices: containers of the BN may also receive the conv output (``Sequential(conv, Sequential(bn,
relu))``); a ``fuse()`` that changes the output raises (model unchanged), since it is a bug in that module;
the root module is never replaced.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def fold_conv_bn(conv: nn.Conv2d, bn: _BatchNorm) -> nn.Conv2d:
    """A new conv (with bias) equal to ``bn(conv(x))`` for ``bn`` in eval mode.

    Keeps stride, padding, dilation, groups and padding mode (copying only the weights breaks
    grouped and dilated convs), on the conv's device and dtype and in its train/eval mode; the
    arithmetic runs in float64.
    """
    if bn.training or not _has_stats(bn):
        raise ValueError("fold_conv_bn needs a BatchNorm in eval mode with running statistics; call model.eval()")
    if bn.num_features != conv.out_channels:
        raise ValueError(f"BatchNorm of {bn.num_features} channels cannot follow a conv of {conv.out_channels}")
    weight = conv.weight.detach().double()
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(weight[:, 0, 0, 0])
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(bias)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(bias)
    scale = gamma / torch.sqrt(bn.running_var.double() + bn.eps)  # (C_out,)

    same = {k: getattr(conv, k) for k in ("kernel_size", "stride", "padding", "dilation", "groups", "padding_mode")}
    fused = type(conv)(  # the conv's own class: a StripConv keeps its fast path
        conv.in_channels, conv.out_channels, bias=True, device=weight.device, dtype=conv.weight.dtype, **same
    )
    if "fast_path" in vars(conv):
        fused.fast_path = conv.fast_path
    with torch.no_grad():
        fused.weight.copy_(weight * scale[:, None, None, None])  # (C_out, C_in / groups, kh, kw)
        fused.bias.copy_((bias - bn.running_mean.double()) * scale + beta)
    return fused.train(conv.training)


@dataclass
class FoldReport:
    """What ``fold_model`` changed, by ``named_modules`` path."""

    fused_modules: list[str]
    folded_pairs: list[tuple[str, str]]
    skipped_pairs: list[tuple[str, str]]

    def __str__(self) -> str:
        text = f"folded {len(self.folded_pairs)} conv+BN pairs, fused {len(self.fused_modules)} modules, "
        text += f"skipped {len(self.skipped_pairs)}"
        if self.skipped_pairs:
            text += ": " + ", ".join(f"{c}+{b}" for c, b in self.skipped_pairs) + " (output also used outside the BN)"
        return text


def fold_model(model: nn.Module, example: torch.Tensor) -> FoldReport:
    """Fuses ``fuse()`` modules and folds every conv -> BN pair of an eval-mode model, in place.

    ``example`` is the input of the trace and of the checks: every output tensor must stay within
    ``1e-4 * max(1, max|reference|)``. The trace keeps every conv output alive, so keep it small.
    """
    if any(m.training for m in model.modules()):
        raise ValueError("fold_model needs an eval-mode model (BatchNorm must use running statistics); call .eval()")
    report = FoldReport([], [], [])
    with torch.no_grad():
        reference = [t.detach().double().clone() for t in _tensors(model(example))]

        def matches() -> bool:
            try:
                out = [t.double() for t in _tensors(model(example))]
            except Exception:  # a replacement that breaks the forward pass is not equivalent either
                return False
            return len(out) == len(reference) and all(
                o.shape == r.shape and torch.allclose(o, r, rtol=0, atol=1e-4 * max(1.0, r.abs().max().item()))
                for o, r in zip(out, reference)
            )

        # 1. Modules that know their deploy form; pre-order, so a fused parent hides its children.
        edits, inside = [], ()
        for module, paths in _names(model).items():
            fuse = getattr(module, "fuse", None)  # a method: StripPooling has a *submodule* called fuse
            if inspect.ismethod(fuse) and "" not in paths and not any(p.startswith(inside) for p in paths):
                if isinstance(fused := fuse(), nn.Module):  # a shared module is replaced at every path
                    edits.append(dict.fromkeys(paths, fused.eval()))
                    inside += tuple(p + "." for p in paths)
        undo = _apply_verified(model, edits, matches)
        if None in undo:
            for old in filter(None, undo):
                _apply(model, old)
            bad = [n for e, u in zip(edits, undo) if u is None for n in e]
            raise RuntimeError(f"fuse() of {bad} changed the model output; fix its fuse(). The model is unchanged.")
        report.fused_modules = [n for e in edits for n in e]

        # 2. Trace: who wrote and who read each conv output (kept alive, so ids stay unique).
        names = _names(model)
        conv_out: dict[int, tuple[nn.Module, torch.Tensor]] = {}
        bn_in: dict[nn.Module, list[torch.Tensor | None]] = {}
        readers: dict[int, list[nn.Module]] = {}

        def on_input(module: nn.Module, args: tuple, kwargs: dict) -> None:
            inputs = _tensors((args, kwargs))
            if isinstance(module, _BatchNorm):
                bn_in.setdefault(module, []).append(inputs[0] if inputs else None)
            for t in inputs:
                if id(t) in conv_out:
                    readers.setdefault(id(t), []).append(module)

        handles = [m.register_forward_pre_hook(on_input, with_kwargs=True) for m in model.modules()]
        handles += [
            m.register_forward_hook(lambda c, _, out: conv_out.update({id(out): (c, out)}))
            for m in model.modules()
            if isinstance(m, nn.Conv2d)
        ]
        try:
            model(example)
        finally:
            for handle in handles:
                handle.remove()

        # 3. A pair: the BN always reads a tensor of this one conv, and only the BN (or its containers) reads those.
        pairs, edits = [], []
        for bn, inputs in bn_in.items():
            sources = {conv_out.get(id(t), (None,))[0] for t in inputs}
            conv = sources.pop()
            if sources or conv is None or len(names[conv]) != 1 or len(names[bn]) != 1 or not _has_stats(bn):
                continue
            parts = names[bn][0].split(".")
            containers = {model.get_submodule(".".join(parts[:i])) for i in range(len(parts))}
            outputs = [i for i, (c, _) in conv_out.items() if c is conv]
            if all({m for m in readers.get(i, []) if m not in containers} == {bn} for i in outputs):
                pairs.append((names[conv][0], names[bn][0]))
                edits.append({names[conv][0]: fold_conv_bn(conv, bn).eval(), names[bn][0]: nn.Identity().eval()})
        conv_out.clear()  # free the traced activations before the verification passes
        for pair, old in zip(pairs, _apply_verified(model, edits, matches)):
            (report.folded_pairs if old is not None else report.skipped_pairs).append(pair)
    model.eval()
    return report


def _tensors(obj: object) -> list[torch.Tensor]:
    """The tensors of a tensor or a nested list / tuple / dict, in order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    return [t for item in obj for t in _tensors(item)] if isinstance(obj, (list, tuple)) else []


def _has_stats(bn: _BatchNorm) -> bool:
    return bn.track_running_stats and bn.running_var is not None


def _names(model: nn.Module) -> dict[nn.Module, list[str]]:
    """Every path of every submodule (a shared module has several)."""
    names: dict[nn.Module, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(module, []).append(name)
    return names


def _apply(model: nn.Module, edit: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """Puts each module at its path (Sequential indices are attribute names too); returns the replaced ones."""
    old = {}
    for name, new in edit.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        old[name] = parent.get_submodule(child)
        setattr(parent, child, new)
    return old


def _apply_verified(model: nn.Module, edits: list[dict], matches: Callable[[], bool]) -> list[dict | None]:
    """Applies all edits; if the output changed, undoes them and retries one at a time.

    Returns per edit the modules it replaced (to undo it), or None where it was undone.
    """
    undo: list[dict[str, nn.Module] | None] = [_apply(model, edit) for edit in edits]
    if not edits or matches():
        return undo
    for old in undo:
        _apply(model, old)
    for i, edit in enumerate(edits):
        undo[i] = _apply(model, edit)
        if not matches():
            _apply(model, undo[i])
            undo[i] = None
    return undo
