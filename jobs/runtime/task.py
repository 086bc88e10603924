"""Run one task (one rank) of a stage: `python -m jobs.runtime.task ENTRYPOINT --config RUN_DIR/stages/<stage>.json`.

Every stage process starts here, under srun, torchrun or alone. Before the entrypoint runs, the
task gets torch's usual distributed variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
NODE_RANK) from Slurm's when srun started it, so any entrypoint can use torch's default init. If
the entrypoint fails, the first failing rank records its own exit code and last exception line in
the stage's `failed` marker (jobs.contract): status then shows the task's code, not srun's 143/137
or torchrun's 1. The stage config is read and checked (jobs.runtime.engine) before the entrypoint is
imported, so a config that breaks the contract exits 2 before any heavy import. A stage of the jobs planned
on the CPU (`engine.device: cpu`) gets CPU placement first, and one planned for GPUs exits 2 where torch
sees none (jobs/runtime/cpu.py). The entrypoint runs
in this process (runpy), so nothing is lost between the two.
With `runtime.stall_timeout_s` in the stage config, a watchdog thread ends a task whose steps have
stopped (a hung collective, a stuck file system) with StageExit.CONTINUE after leaving the continue
marker, so the script's requeue resumes the stage from its last checkpoint. A rank of a stage with
several also copies its output to a log of its own (jobs/runtime/ranklog.py). Standard library only.
"""

from __future__ import annotations

import os
import runpy
import socket
import sys
import threading
import time
import traceback
from typing import Optional

from jobs.contract import (ConfigError, RunLayout, StageConfig, StageExit, last_progress, read_stage_config,
                           write_continue, write_failure)

from . import cpu, signals
from .engine import check_engine
from .ranklog import tee_output

WATCHDOG_POLL_S = 1.0
STAGE_PACKAGE = "jobs.stages."  # the jobs' own stages: devices checked, CPU placement installed as planned


def _tasks_on_this_node(environ: dict[str, str]) -> Optional[str]:
    """SLURM_TASKS_PER_NODE is `4` or `4(x2),3`: the count for this node (SLURM_NODEID)."""
    if environ.get("SLURM_NTASKS_PER_NODE"):
        return environ["SLURM_NTASKS_PER_NODE"]
    spec = environ.get("SLURM_STEP_TASKS_PER_NODE") or environ.get("SLURM_TASKS_PER_NODE")
    node = environ.get("SLURM_NODEID")
    if not spec or node is None or not node.isdigit():
        return None
    counts: list[str] = []
    for part in spec.split(","):
        count, _, repeat = part.partition("(x")
        counts += [count] * (int(repeat.rstrip(")")) if repeat else 1)
    index = int(node)
    return counts[index] if index < len(counts) else None


def distributed_env(environ: dict[str, str]) -> dict[str, str]:
    """torch's variables derived from Slurm's for a task srun started; what torchrun set is kept; a
    process started alone is rank 0 of 1."""
    if "RANK" in environ:
        return {}
    if "SLURM_PROCID" not in environ:
        return {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "NODE_RANK": "0"}
    derived = {"RANK": environ["SLURM_PROCID"],
               "WORLD_SIZE": environ.get("SLURM_STEP_NUM_TASKS") or environ.get("SLURM_NTASKS", "1"),
               "LOCAL_RANK": environ.get("SLURM_LOCALID", "0"),
               "NODE_RANK": environ.get("SLURM_NODEID", "0")}
    local_world = _tasks_on_this_node(environ)
    if local_world:
        derived["LOCAL_WORLD_SIZE"] = local_world
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in environ:
            derived[name] = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}[name]
    return derived


def _record(exit_code: int, exception: Optional[str]) -> None:
    run_dir, stage = os.environ.get("MINITRON_RUN_DIR"), os.environ.get("MINITRON_STAGE")
    if not run_dir or not stage:
        return
    rank = os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or "0"
    job_id = os.environ.get("SLURM_JOB_ID") or os.environ.get("MINITRON_JOB_ID")
    try:
        write_failure(RunLayout(run_dir), stage, exit_code, exception, int(rank) if rank.isdigit() else -1,
                      socket.gethostname(), job_id)
    except OSError as exc:  # the failure itself is what matters; say why it was not recorded
        print(f"minitron: could not record the failure marker: {exc}", file=sys.stderr)


def _tee_rank_output() -> None:
    """A rank of a stage with several also writes its output to its own log (jobs/runtime/ranklog.py)."""
    run_dir, stage = os.environ.get("MINITRON_RUN_DIR"), os.environ.get("MINITRON_STAGE")
    rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    if run_dir and stage and rank.isdigit() and world.isdigit() and int(world) > 1:
        local = "MINITRON_JOB_ID" in os.environ  # the local executor's (even inside a Slurm allocation)
        tee_output(RunLayout(run_dir).rank_log(stage, None if local else os.environ.get("SLURM_JOB_ID"), int(rank)))


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    return 1  # sys.exit("message") prints the message and exits 1


def _stage_config(args: list[str], devices: bool) -> Optional[StageConfig]:
    """The stage config named by `--config` (None for an entrypoint run without one); ConfigError when it
    breaks the contract, or (for the jobs' own stages, `devices`) plans GPUs where torch sees none or asks
    for an engine this stack does not have. The devices come first: on nodes without GPUs the fix is
    `gpus_per_node: 0`, whatever the attention path."""
    if "--config" not in args or args.index("--config") + 1 >= len(args):
        return None
    config = read_stage_config(args[args.index("--config") + 1])
    if devices:
        cpu.check_devices(config)
    check_engine(config)
    return config


def _stall_timeout(config: Optional[StageConfig]) -> Optional[float]:
    """`runtime.stall_timeout_s` of the stage config, if it has one."""
    timeout = ((config.runtime or {}) if config is not None else {}).get("stall_timeout_s")
    return float(timeout) if isinstance(timeout, (int, float)) and timeout > 0 else None


def start_watchdog(timeout_s: float, poll_s: float = WATCHDOG_POLL_S) -> threading.Thread:
    """Once the task has made progress, exit it for requeue when no step follows for `timeout_s`."""
    def watch() -> None:
        while True:
            time.sleep(poll_s)
            last = last_progress()
            if last is not None and time.time() - last > timeout_s:
                run_dir, stage = os.environ.get("MINITRON_RUN_DIR"), os.environ.get("MINITRON_STAGE")
                print(f"minitron: no progress for {timeout_s:.0f} s: exiting {int(StageExit.CONTINUE)} so the "
                      f"stage is continued from its last checkpoint", file=sys.stderr, flush=True)
                if run_dir and stage:
                    try:
                        write_continue(RunLayout(run_dir), stage, reason=f"no progress for {timeout_s:.0f} s")
                    except OSError:
                        pass
                os._exit(StageExit.CONTINUE)  # a hung collective cannot be interrupted from Python

    thread = threading.Thread(target=watch, name="minitron-stall-watchdog", daemon=True)
    thread.start()
    return thread


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print("usage: python -m jobs.runtime.task ENTRYPOINT [ARGS...]", file=sys.stderr)
        return StageExit.CONFIG
    entrypoint, args = argv[0], argv[1:]
    os.environ.update(distributed_env(dict(os.environ)))
    _tee_rank_output()
    try:
        config = _stage_config(args, devices=entrypoint.startswith(STAGE_PACKAGE))
    except ConfigError as exc:
        what = "cannot run this stage here" if isinstance(exc, cpu.DeviceError) else "invalid stage config"
        print(f"minitron: {what}: {exc}", file=sys.stderr, flush=True)
        _record(int(StageExit.CONFIG), f"{type(exc).__name__}: {exc}")
        return StageExit.CONFIG
    stall_timeout = _stall_timeout(config)
    if stall_timeout:
        start_watchdog(stall_timeout)
    sys.argv = [entrypoint, *args]
    try:
        if config is not None and entrypoint.startswith(STAGE_PACKAGE) and cpu.on_cpu(config):
            cpu.install()
        runpy.run_module(entrypoint, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = _exit_code(exc.code)
        if code not in (StageExit.OK, StageExit.CONTINUE):
            message = exc.code if isinstance(exc.code, str) else None
            _record(code, message)
        if code == StageExit.OK:
            signals.ignore_signal()
        return code
    except BaseException as exc:  # noqa: BLE001 - recorded, then re-raised with its traceback
        _record(int(StageExit.FAILED), traceback.format_exception_only(type(exc), exc)[-1].strip())
        raise
    signals.ignore_signal()
    return StageExit.OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
