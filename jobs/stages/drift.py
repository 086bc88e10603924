"""Where the NeMo 2 stacks differ (NVIDIA's containers 25.09 to 26.04: NeMo 2.5-2.7, megatron-core 0.14-0.16,
ModelOpt 0.35-0.41), one function per drift point: the capability is read from the installed code, never from
a version number, and the path that exists is taken. Standard library at import (the probe job imports it).

- **The optimizer call.** NeMo's optimizer setup (`nemo.lightning._strategy_lib.setup_megatron_optimizer`,
  the same in NeMo 2.5.0-2.7.3) calls megatron-core's `get_megatron_optimizer(..., no_weight_decay_cond=,
  scale_lr_cond=, lr_mult=)`; megatron-core 0.16 (the 26.02 container) removed those three keywords in favour
  of `config_overrides`, whose default (`get_standard_config_overrides`: no weight decay on biases and 1-D
  parameters) is what NeMo's default values ask for. `optimizer_call` tells the three cases apart;
  `adapt_optimizer_call` puts a wrapper in megatron-core's module that drops the keywords when NeMo passes its
  defaults (what `nemo_parts.optimizer` builds), and refuses anything else.
- **The zarr checkpoint strategy.** megatron-core 0.16 removed `dist_checkpointing.strategies.tensorstore`;
  NeMo 2.5-2.7.x import it in the same try block as the rest of megatron's checkpointing
  (`nemo/utils/callbacks/dist_ckpt_io.py`), so on 0.16 NeMo believes megatron-core is missing and its async
  checkpoint IO, the default of the strategy NeMo's HF exporter builds, raises (the 26.02 stack's export
  stage on the GPU device). The jobs write torch_dist checkpoints only: `install_stand_ins` puts a module in
  its place, made only where megatron-core lacks it, whose zarr strategy refuses to run.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import inspect
import sys
import types
from typing import Any, Callable, Optional

LEGACY_OPTIMIZER_KEYWORDS = ("no_weight_decay_cond", "scale_lr_cond", "lr_mult")
NATIVE, ADAPTED, INCOMPATIBLE = "native", "adapted", "incompatible"


def optimizer_call(get_megatron_optimizer: Callable[..., Any]) -> str:
    """NATIVE: it takes NeMo's keywords (megatron-core 0.14/0.15, or **kwargs); ADAPTED: it has the
    `config_overrides` that replaced them (0.16); INCOMPATIBLE: neither."""
    params = inspect.signature(get_megatron_optimizer).parameters
    if all(k in params for k in LEGACY_OPTIMIZER_KEYWORDS) or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return NATIVE
    return ADAPTED if "config_overrides" in params else INCOMPATIBLE


def _without_legacy_keywords(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def get_megatron_optimizer(config, model_chunks, *args, no_weight_decay_cond=None, scale_lr_cond=None,
                               lr_mult=1.0, **kwargs):
        if no_weight_decay_cond is not None or scale_lr_cond is not None or lr_mult != 1.0:
            raise RuntimeError("megatron-core's get_megatron_optimizer no longer takes no_weight_decay_cond, "
                               "scale_lr_cond or lr_mult; only NeMo's defaults (None, None, 1.0) map onto its "
                               "config_overrides, and this call passed others")
        return original(config, model_chunks, *args, **kwargs)

    get_megatron_optimizer.minitron_adapted = True
    return get_megatron_optimizer


def adapt_optimizer_call() -> str:
    """Make NeMo's optimizer setup work with the installed megatron-core (before `llm.train`); returns the path
    taken. NeMo imports `get_megatron_optimizer` from `megatron.core.optimizer` inside the setup function, so
    the wrapper goes there. RuntimeError for a megatron-core neither path fits."""
    from megatron.core import optimizer as mcore_optimizer

    current = mcore_optimizer.get_megatron_optimizer
    if getattr(current, "minitron_adapted", False):
        return ADAPTED
    mode = optimizer_call(current)
    if mode == INCOMPATIBLE:
        raise RuntimeError(f"megatron-core's get_megatron_optimizer{inspect.signature(current)} takes neither NeMo's "
                           f"{', '.join(LEGACY_OPTIMIZER_KEYWORDS)} nor config_overrides: this stack cannot build "
                           f"NeMo's optimizer (see `minitron check --probe`)")
    if mode == ADAPTED:
        mcore_optimizer.get_megatron_optimizer = _without_legacy_keywords(current)
    return mode


ZARR_STRATEGY = "megatron.core.dist_checkpointing.strategies.tensorstore"


class _ZarrStrategyRemoved:
    def __init__(self, *args: Any, **kwargs: Any):
        raise RuntimeError("zarr checkpoints need megatron-core's tensorstore strategy, which this megatron-core "
                           "removed (0.16); the stage jobs write torch_dist checkpoints")


class _StandInForRemovedModule(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Last on sys.meta_path, so asked only once every real finder has said the module does not exist."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Optional[importlib.machinery.ModuleSpec]:
        return importlib.machinery.ModuleSpec(fullname, self) if fullname == ZARR_STRATEGY else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        module.__doc__ = "stand-in (jobs.stages.drift): removed in megatron-core 0.16"
        module.TensorStoreLoadShardedStrategy = _ZarrStrategyRemoved


def install_stand_ins() -> None:
    """Stand in for the checkpoint strategy modules NeMo imports that the installed megatron-core lacks. Imports
    nothing: the stand-in is made only if such a module is imported and no real one exists (jobs/stages/__init__.py
    installs it before any stage module imports NeMo)."""
    if not any(isinstance(finder, _StandInForRemovedModule) for finder in sys.meta_path):
        sys.meta_path.append(_StandInForRemovedModule())
