"""Executors run a rendered run's stages. Each one: submit, query (one batched call), cancel."""

from __future__ import annotations

from typing import Any


def executor_for(kind: str) -> Any:
    if kind == "slurm":
        from .slurm import SlurmExecutor
        return SlurmExecutor()
    if kind == "local":
        from .local import LocalExecutor
        return LocalExecutor()
    raise ValueError(kind)
