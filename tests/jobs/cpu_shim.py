"""Test-only CUDA->CPU redirection so NeMo 2 / megatron-core training code runs on a CPU-only torch.

Limited to device placement (python-env.md §B): "cuda" devices become the CPU, CUDA streams and
syncs do nothing, CUDA counts as initialised, pin_memory is dropped, and megatron's CUDA RNG tracker fork is a no-op.
`torch.cuda.is_available()` stays False, so the jobs themselves still pick the CPU accelerator
and fp32; no numerics are changed. Install before NeMo/megatron model code runs.
"""

from __future__ import annotations

import contextlib
import functools

import torch

_FACTORIES = ("tensor", "zeros", "ones", "empty", "full", "arange", "rand", "randn", "randint",
              "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like")
_installed = False


def _cpu(device):
    if isinstance(device, int):
        return torch.device("cpu")
    if isinstance(device, (str, torch.device)) and torch.device(device).type == "cuda":
        return torch.device("cpu")
    return device


def _factory(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if "device" in kwargs:
            kwargs["device"] = _cpu(kwargs["device"])
        kwargs.pop("pin_memory", None)
        return fn(*args, **kwargs)

    return wrapper


def _to(fn):
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        args = tuple(_cpu(a) if isinstance(a, (str, int, torch.device)) else a for a in args)
        if "device" in kwargs:
            kwargs["device"] = _cpu(kwargs["device"])
        return fn(self, *args, **kwargs)

    return wrapper


class _NoStream:
    """Stands in for torch.cuda.Stream; must stay a class (transformers uses it in annotations)."""

    def __init__(self, *args, **kwargs):
        pass

    def wait_stream(self, *args, **kwargs):
        pass

    def synchronize(self):
        pass


def install() -> None:
    global _installed
    if _installed:
        return
    from megatron.core.tensor_parallel.random import CudaRNGStatesTracker

    for name in _FACTORIES:
        setattr(torch, name, _factory(getattr(torch, name)))
    torch.Tensor.to = _to(torch.Tensor.to)
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.cuda.current_device = lambda: 0  # device index 0, mapped to the CPU by the wrappers above
    torch.cuda.is_initialized = lambda: True  # NeMo's checkpoint loader asserts it before placing tensors
    torch.cuda.Stream = _NoStream
    torch.cuda.stream = lambda *args, **kwargs: contextlib.nullcontext()
    torch.cuda.synchronize = lambda *args, **kwargs: None
    CudaRNGStatesTracker.fork = lambda self, name=None: contextlib.nullcontext()
    _installed = True
