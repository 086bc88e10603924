"""What every stage entrypoint does around its body (standard library only, so it imports fast).

Read and validate its config, know its rank, skip work that is already complete, check the engine the
plan chose, print progress from rank 0, turn the continuation signal into StageExit.CONTINUE, and
write the complete marker last.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from jobs.contract import (ConfigError, StageConfig, StageExit, note_progress, progress_line, read_markers,
                           read_stage_config, write_complete, write_continue)

from . import signals
from .engine import check_engine

log = logging.getLogger("jobs")


def load_config(argv: Sequence[str] | None = None) -> StageConfig:
    """Parse `--config PATH`, read the JSON and validate it against the contract."""
    parser = argparse.ArgumentParser(description="Run one pipeline stage from its stage config.")
    parser.add_argument("--config", required=True, type=Path, help="RUN_DIR/stages/<stage>.json")
    args = parser.parse_args(argv)
    return read_stage_config(args.config)


def _env_int(*names: str, default: int) -> int:
    for name in names:
        if os.environ.get(name):
            return int(os.environ[name])
    return default


def global_rank() -> int:
    """Rank of this process: torchrun and jobs.runtime.task set RANK; a bare srun task has SLURM_PROCID."""
    return _env_int("RANK", "SLURM_PROCID", default=0)


def world_size() -> int:
    return _env_int("WORLD_SIZE", "SLURM_NTASKS", default=1)


def local_rank() -> int:
    return _env_int("LOCAL_RANK", "SLURM_LOCALID", default=0)


def is_rank_zero() -> bool:
    return global_rank() == 0


def is_complete(cfg: StageConfig) -> bool:
    """Done = complete marker for these very outputs, and every one of them exists."""
    markers = read_markers(cfg.layout, cfg.stage)
    return markers.complete and markers.outputs == cfg.outputs


def report_progress(step: int, total: int, train_loss: float | None = None, val_loss: float | None = None) -> None:
    """Note the step on every rank (the stall watchdog of jobs.runtime.task reads it) and print a progress
    line from global rank 0 only, flushed so `minitron status` sees it live."""
    note_progress()
    if is_rank_zero():
        print(progress_line(step, total, train_loss, val_loss), flush=True)


def apply_env_defaults(cfg: StageConfig) -> None:
    """NVIDIA's launch defaults (NeMo-Run executors / PerfEnvPlugin); the profile may override them."""
    os.environ.setdefault("TORCH_NCCL_AVOID_RECORD_STREAMS", "1")
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    parallel = cfg.parallel or {}
    if parallel.get("tp", 1) > 1 or parallel.get("cp", 1) > 1:
        os.environ.setdefault("CUDA_DEVICE_MAX_CONNECTIONS", "1")


def mark_continue(cfg: StageConfig, reason: str = "time limit") -> None:
    """Rank 0 leaves `<stage>.continue` before an exit CONTINUE: the script trusts it even when srun
    reports another code (kill-on-bad-exit can terminate the ranks that had not exited yet) or torchrun
    masks it."""
    if is_rank_zero():
        write_continue(cfg.layout, cfg.stage, reason)


def run_stage(kind: str, body: Callable[[StageConfig], None], argv: Sequence[str] | None = None) -> int:
    """Common frame of every stage: config, idempotency, engine, env, body, complete marker. Returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        cfg = load_config(argv)
        if cfg.kind != kind:
            raise ConfigError(f"config is for kind {cfg.kind!r}, this entrypoint runs {kind!r}")
        check_engine(cfg)
    except ConfigError as exc:
        log.error("invalid stage config: %s", exc)
        return StageExit.CONFIG
    if is_complete(cfg):
        log.info("stage %s already complete (marker and outputs present); nothing to do", cfg.stage)
        return StageExit.OK
    apply_env_defaults(cfg)
    if cfg.stage_kind.trains:
        signals.exit_on_signal()
    log.info("stage %s (%s) starting on rank %d/%d", cfg.stage, kind, global_rank(), world_size())
    try:
        body(cfg)
    except SystemExit as exc:
        if exc.code == StageExit.CONTINUE:
            mark_continue(cfg)
        raise
    if is_rank_zero():
        write_complete(cfg.layout, cfg.stage, cfg.outputs)
        log.info("stage %s complete", cfg.stage)
    return StageExit.OK
