"""Executors run a rendered run's stages behind one protocol (base.Executor): Slurm or this machine.

Whatever differs between backends is asked of the executor class (`executor_class(kind)`): its
class attributes say what the planner and the profile checks need to know, so nothing outside this
package branches on an executor's name.
"""

from __future__ import annotations

from .base import Executor

KINDS = ("slurm", "local")


def executor_class(kind: str) -> type:
    if kind == "slurm":
        from .slurm import SlurmExecutor
        return SlurmExecutor
    if kind == "local":
        from .local import LocalExecutor
        return LocalExecutor
    raise ValueError(f"unknown executor {kind!r}")


def executor_for(kind: str) -> Executor:
    return executor_class(kind)()
