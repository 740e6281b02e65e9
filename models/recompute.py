"""Activation checkpointing: a part of the model keeps only its input in the forward pass and runs
again in the backward pass, trading compute for the memory of its activations.

Chen et al., "Training Deep Nets with Sublinear Memory Cost", https://arxiv.org/abs/1604.06174.

``torch.utils.checkpoint`` (non-reentrant) replays the dropout masks of the forward pass (it restores
the RNG state), but it runs the part again in training mode, so every BatchNorm in it would update its
running statistics twice per step (tested: ``num_batches_tracked`` 2 after one step). The
recomputation here puts them back as they were, so a checkpointed step leaves the same statistics as a
plain one. Under ``torch.compile`` the compiler does the recomputation in its backward graph, where the
statistics are updated once anyway; ``torch.compile`` also accepts no other ``context_fn``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint


def should_recompute(module: nn.Module) -> bool:
    """Checkpoint only where there is a backward pass to save memory for: training with gradients."""
    return module.training and torch.is_grad_enabled()


def recomputed(module: nn.Module, *args: object) -> object:
    """``module(*args)``, its activations recomputed in the backward pass instead of stored."""
    if torch.compiler.is_compiling():  # dynamo takes no context_fn argument, not even the default one
        return checkpoint(module, *args, use_reentrant=False, preserve_rng_state=True)
    context_fn = functools.partial(_contexts, module)
    return checkpoint(module, *args, use_reentrant=False, preserve_rng_state=True, context_fn=context_fn)


def _contexts(module: nn.Module) -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
    return contextlib.nullcontext(), _running_stats_kept(module)  # (forward, recomputation)


@contextlib.contextmanager
def _running_stats_kept(module: nn.Module) -> Iterator[None]:
    """The BatchNorm buffers of ``module`` as they were before the recomputation, after it (which may stop
    early, once the backward has what it needs: the buffers are restored all the same)."""
    norms = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    saved = [[buffer.clone() for buffer in _stats(m)] for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, before in zip(norms, saved):
                for now, then in zip(_stats(m), before):
                    now.copy_(then)


def _stats(norm: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return norm.running_mean, norm.running_var, norm.num_batches_tracked
