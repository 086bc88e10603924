"""Executors run a rendered run's stages behind one protocol (base.Executor): Slurm or this machine."""

from __future__ import annotations

from .base import Executor

KINDS = ("slurm", "local")


def executor_for(kind: str) -> Executor:
    if kind == "slurm":
        from .slurm import SlurmExecutor
        return SlurmExecutor()
    if kind == "local":
        from .local import LocalExecutor
        return LocalExecutor()
    raise ValueError(f"unknown executor {kind!r}")
