"""A model stage on the CPU: what the plan asks of a stage planned without GPUs (`engine.device: cpu`).

A profile with `gpus_per_node: 0` (nodes without GPUs, such as the project's Slurm testbed) plans every
model stage as one process on a node's CPUs, in fp32 (launcher/planning/planner.py). NeMo 2 and
megatron-core still place some tensors on CUDA where no option reaches (a data step's `batch.cuda()`,
the optimizer's scale tensor, RoPE and DDP buffers at `torch.cuda.current_device()`, CUDA streams and the
CUDA RNG tracker), so `install()` redirects device placement to the CPU before any model code runs:
"cuda" devices become the CPU, CUDA streams and syncs do nothing, CUDA counts as initialised, pin_memory
is dropped, megatron's CUDA RNG tracker fork is a no-op, and a 0-d tensor given to gloo's
all_gather_into_tensor (ModelOpt's layer drop does that; NCCL accepts it, gloo does not) goes as a
1-element tensor. `torch.cuda.is_available()` stays False, so the stages still pick Lightning's CPU
accelerator; no numerics change. It proves the launcher, the scheduler and the stage code, not speed.

`check_devices` is the other half: a stage planned for GPUs on a node where torch sees none stops
before its first import of NeMo, naming the setting to change. The module imports nothing but the
standard library until one of them is called.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys

from jobs.contract import ConfigError, StageConfig

_FACTORIES = ("tensor", "zeros", "ones", "empty", "full", "arange", "rand", "randn", "randint",
              "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like")
_installed = False


class DeviceError(ConfigError):
    """This node or Python cannot run the stage as planned (no torch, or no GPU where the plan has GPUs)."""


def on_cpu(cfg: StageConfig) -> bool:
    """Whether the plan runs this stage's model on the CPU (`engine.device`, gpu when absent)."""
    return cfg.engine is not None and cfg.engine.get("device", "gpu") == "cpu"


def check_devices(cfg: StageConfig) -> None:
    """ConfigError when this Python cannot run the stage's model (no torch: the profile's `python` lacks the
    jobs' stack), or when a stage planned for GPUs finds none: the profile (or Slurm's GRES) says the nodes
    have GPUs but torch sees no CUDA device here."""
    if cfg.engine is None:
        return
    try:
        import torch
    except ImportError as exc:
        raise DeviceError(f"cannot import torch ({exc}): {sys.executable} lacks the jobs' stack; run the NeMo "
                          f"container, or point the profile's `python` at a Python with torch and NeMo 2.7") from None
    if on_cpu(cfg) or torch.cuda.is_available():
        return
    planned = (cfg.parallel or {}).get("gpus_per_node", 1)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    raise DeviceError(
        f"the plan gives this stage {planned} GPU(s) per node, but torch {torch.__version__} sees no CUDA device "
        f"here (CUDA_VISIBLE_DEVICES={visible if visible is not None else 'unset'}"
        f"{'' if torch.version.cuda else ', a CPU-only torch build'}): on nodes without GPUs set "
        f"`gpus_per_node: 0` in the profile (`minitron init --gpus-per-node 0`); otherwise run the NeMo container")


def _cpu(device):
    import torch

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
    import torch

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        args = tuple(_cpu(a) if isinstance(a, (str, int, torch.device)) else a for a in args)
        if "device" in kwargs:
            kwargs["device"] = _cpu(kwargs["device"])
        return fn(self, *args, **kwargs)

    return wrapper


def _gather_0d(fn):
    """gloo's all_gather_into_tensor refuses a 0-d input ("invalid tensor size ... expected (), got (1)")."""
    @functools.wraps(fn)
    def wrapper(output_tensor, input_tensor, *args, **kwargs):
        if input_tensor.dim() == 0:
            input_tensor = input_tensor.reshape(1)
        return fn(output_tensor, input_tensor, *args, **kwargs)

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
    """Redirect CUDA placement to the CPU (once per process), before NeMo/megatron model code runs."""
    global _installed
    if _installed:
        return
    import torch
    import torch.distributed
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
    torch.distributed.all_gather_into_tensor = _gather_0d(torch.distributed.all_gather_into_tensor)
    CudaRNGStatesTracker.fork = lambda self, name=None: contextlib.nullcontext()
    _installed = True
