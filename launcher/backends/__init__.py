"""Backends run a rendered run's stages behind one protocol (base.Executor): Slurm or this machine.

`executor_for(name)` is the only place that maps an executor's name to its backend; what the planner
and the profile checks need to know of each is its traits (launcher/config/executors.py).
"""

from __future__ import annotations

from .base import Executor
from .local import LocalExecutor
from .slurm import SlurmExecutor

BACKENDS: dict[str, type] = {"slurm": SlurmExecutor, "local": LocalExecutor}


def executor_for(name: str) -> Executor:
    try:
        return BACKENDS[name]()
    except KeyError:
        raise ValueError(f"unknown executor {name!r} (known: {', '.join(BACKENDS)})") from None
