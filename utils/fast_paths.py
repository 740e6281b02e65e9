"""The fast paths that keep the math exact, each switchable (``train.fast`` / ``eval.fast``).

Each one changes how the computation runs, never what it computes: outputs and gradients equal
the plain path to float rounding (``tests/test_fast_paths.py``). ``docs/benchmarks.md`` has what
each one gains, measured side by side.

- ``reuse_memory``: glibc returns large freed blocks to the OS at once (``munmap``), so every
  training step page-faults its activations back in, one 4 KiB page at a time; on the 2-core
  development VM that cost 25-40% of a CPU step. Turning mmap off keeps freed memory in the heap
  for the next step. Process-wide, so it is set once, at start-up; the peak memory is unchanged.
- ``strip_conv``: the (3, 1) conv of the width-pooled (H x 1) strip falls to PyTorch's slow
  non-oneDNN convolution on the CPU; as the equivalent 1-D conv it does not.
- ``strip_pool``: on a channels_last CPU map, PyTorch's mean over H or W (and the backward of
  ``expand``, a sum) takes a slow path, unlike on NCHW; strip pooling (SPM, MPM) then pools with
  ``adaptive_avg_pool2d`` and broadcasts with nearest ``interpolate``, which have NHWC kernels
  (``models/modules/strips.py``).
- ``inference_mode``: no autograd bookkeeping at all during inference (``no_grad`` keeps some).
- ``fold_bn``: inference folds every conv+BN pair (and ACNet block) into one conv.
- ``channels_last``: NHWC tensors on CUDA (cuDNN's NHWC kernels) and on the CPU (oneDNN's), where
  it was measured faster or even in every case (docs/benchmarks.md); other devices stay NCHW.

``apply_fast_paths`` switches them all on a model, the one place train.py, eval.py and the
benchmarks do it; ``describe_fast_paths`` says in words which are on.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import platform
from typing import Any

import torch
from torch import nn

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc mallopt parameters (malloc.h)
_GLIBC_MMAP_MAX_DEFAULT = 65536
_INT_MAX = 2**31 - 1


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


_applied = False  # whether this process turned reuse on (glibc cannot fully go back afterwards)


def reuse_freed_memory(enabled: bool = True) -> bool:
    """Keep freed memory in the process for reuse (glibc); ``False`` leaves glibc's defaults alone.

    Returns whether the setting applies here (False off glibc, e.g. macOS, where it is a no-op).
    Once on, ``False`` puts mmap back and returns the kept memory to the OS (``malloc_trim``), but
    glibc's *dynamic* mmap threshold stays off for the rest of the process: to compare on and off,
    use one process per setting (``scripts/compare_official.py`` does).
    """
    global _applied
    libc = _glibc()
    if libc is None:
        return False
    if enabled:
        _applied = True
        return bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, _INT_MAX))
    if _applied:
        libc.mallopt(_M_MMAP_MAX, _GLIBC_MMAP_MAX_DEFAULT)
        libc.mallopt(_M_TRIM_THRESHOLD, 128 * 1024)
        libc.malloc_trim(0)
        _applied = False
    return True


def trim_freed_memory() -> bool:
    """Return the memory the process keeps for reuse to the OS now (glibc ``malloc_trim``), so that the
    resident set counts live memory only, e.g. before measuring a step's peak; False off glibc."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def use_strip_conv_fast_path(model: nn.Module, enabled: bool = True) -> int:
    """Switch every strip conv of ``model`` (modules with a ``fast_path`` flag); returns how many."""
    return _switch(model, "fast_path", enabled)


def use_strip_pool_fast_path(model: nn.Module, enabled: bool = True) -> int:
    """Switch every strip pooling of ``model`` (SPM, MPM: modules with a ``fast_pool`` flag); returns how many."""
    return _switch(model, "fast_pool", enabled)


def _switch(model: nn.Module, flag: str, enabled: bool) -> int:
    switched = 0
    for module in model.modules():
        if hasattr(module, flag):
            setattr(module, flag, enabled)
            switched += 1
    return switched


def apply_fast_paths(model: nn.Module, fast: Any, device: torch.device | str) -> torch.memory_format:
    """Switch the exact fast paths of ``fast`` (a ``FastPaths`` config section) on ``model``, in place:
    memory reuse, strip convs, strip pooling, and the memory format, which is returned for the inputs.
    Folding (``fast.fold_bn``) is for inference only: ``engine.inference.prepare_for_inference``."""
    reuse_freed_memory(fast.reuse_memory)
    use_strip_conv_fast_path(model, fast.strip_conv)
    use_strip_pool_fast_path(model, fast.strip_pool)
    channels_last = fast.channels_last and torch.device(device).type in ("cuda", "cpu")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    return memory_format


def describe_fast_paths(fast: Any) -> str:
    """``all on``, ``all off (the plain path)`` or ``on except strip_conv, fold_bn``: for logs and results."""
    switches = {f.name: getattr(fast, f.name) for f in dataclasses.fields(fast)}
    off = [name for name, on in switches.items() if not on]
    if not off:
        return "all on"
    if len(off) == len(switches):
        return "all off (the plain path)"
    return f"on except {', '.join(off)}"


def inference_context(inference_mode: bool) -> contextlib.AbstractContextManager:
    """``torch.inference_mode()`` on the fast path, ``torch.no_grad()`` on the plain one."""
    return torch.inference_mode() if inference_mode else torch.no_grad()
