"""The time model's constants and its two formulas: a stage's startup and a training stage's wall time.

Each stage costs a startup (container, interpreter, NeMo import, checkpoint loads) plus its steps,
each step its FLOPs at the GPU's achievable rate plus a fixed per-step cost that dominates small
models. Measured stage times (calibration.py) replace the model for a stage whose key they cover.
"""

from __future__ import annotations

import math

from ..config.values import parse_time_minutes
from . import memory as mm

DATA_PREP_HOURS = 0.25  # tokenising WikiText-103 (~120M tokens) on 32 workers; not modelled
HOST_BYTES_PER_SECOND = 1e9  # checkpoint conversion, loads and saves read and write about this fast
# Startup, MEASURED on the device (1 × H200, local executor, no container): the tiny recipe's stages
# took 47-79 s each (benchmarks/results/tiny-gpu-20261128/status.txt), almost all of it before the
# first step; `import nemo.collections.llm` alone is 38 s (../shared/reference/device-notes.md).
PROCESS_START_S = 8.0    # interpreter, torch import, torchrun rendezvous
NEMO_IMPORT_S = 38.0
NEMO_SETUP_S = 12.0      # trainer, strategy, process groups, model build, data loaders
TEACHER_SETUP_S = 8.0    # the distillation wrapper around student and teacher
BUILTIN_DATA_S = 45.0    # the tiny corpus: imports, BPE training, tokenising (measured 47 s)
# Per-step costs independent of model size (kernel launches, optimizer, logging): the tiny recipe's
# 300 fine-tune steps at 2 micro-batches took ~21 s beyond the startup of a stage with no steps.
STEP_OVERHEAD_S = 0.03
MICRO_BATCH_OVERHEAD_S = 0.02
# fp32 model TFLOP/s of one process on a node's CPUs (a profile without GPUs): a guess until measured.
CPU_TFLOPS = 0.05
CHECKPOINT_BYTES_PER_PARAM = mm.WEIGHT_BYTES + mm.OPTIMIZER_BYTES  # weights + fp32 master and Adam


def startup_s(container_s: float, nemo: bool, load_params: float = 0.0, extra_s: float = 0.0) -> float:
    """Seconds before a stage's first step: container (`container_s`, 0 on bare metal), interpreter,
    NeMo, checkpoint loads."""
    seconds = PROCESS_START_S + extra_s + load_params * mm.WEIGHT_BYTES / HOST_BYTES_PER_SECOND + container_s
    if nemo:
        seconds += NEMO_IMPORT_S + NEMO_SETUP_S
    return seconds


def training_step_s(flops_per_token: float, lay: mm.Layout, gbs: int, world: int, tflops: float,
                    teacher: bool) -> tuple[float, float]:
    """(seconds per optimizer step, seconds of one global batch's compute): FLOPs at the achievable rate
    with the pipeline bubble, plus fixed per-step and per-micro-batch costs (a teacher doubles the
    micro-batches)."""
    bubble = 1 + (lay.pp - 1) / lay.grad_accum
    compute_s = gbs * lay.seq_length * flops_per_token / (world * tflops * 1e12) * bubble
    micro_batches = lay.grad_accum * (2 if teacher else 1)
    return compute_s + STEP_OVERHEAD_S + MICRO_BATCH_OVERHEAD_S * micro_batches, compute_s


def validation_s(steps: int, val_check_interval: int, limit_val_batches: int, compute_s: float,
                 micro_batches: int) -> float:
    """Validation passes: forward only (a third of a training step's compute) over `limit_val_batches`."""
    per_batch = compute_s / 3 + MICRO_BATCH_OVERHEAD_S * micro_batches
    return (steps // val_check_interval) * limit_val_batches * per_batch


def checkpoint_s(steps: int, ckpt_every_n_steps: int, params: float, nodes: int) -> float:
    """Checkpoint saves (weights and optimizer state), written in parallel by the nodes."""
    saves = math.ceil(steps / ckpt_every_n_steps)
    return saves * params * CHECKPOINT_BYTES_PER_PARAM / (HOST_BYTES_PER_SECOND * nodes)


# A stage's time limit where the recipe sets none: the estimate × LIMIT_MARGIN + LIMIT_FLOOR_MIN, rounded up
# to LIMIT_ROUND_MIN. The margin covers the model's error (the tiny recipe's measured wall time is held to
# 0.75-1.33× its estimate, tests/test_planner.py); the floor covers what no margin of a short estimate does:
# an image pulled on a node's first use, a slow shared file system, a rendezvous over many nodes.
LIMIT_MARGIN = 1.5
LIMIT_FLOOR_MIN = 10
LIMIT_ROUND_MIN = 5


def planned_limit_minutes(est_s: float, lead_s: float = 0.0) -> int:
    """The limit of a stage estimated at `est_s`; `lead_s`: how long before its limit a requeued stage is
    told to checkpoint, time its work must not lose."""
    minutes = est_s * LIMIT_MARGIN / 60 + LIMIT_FLOOR_MIN + lead_s / 60
    return math.ceil(minutes / LIMIT_ROUND_MIN) * LIMIT_ROUND_MIN


def attempts(est_s: float, startup_s: float, limit_s: float, lead_s: float) -> int | None:
    """Runs a requeued stage needs within a limit of `limit_s`: each starts again (`startup_s`) and works
    until the signal `lead_s` before the limit; None when a run would make no progress."""
    per_run = limit_s - lead_s - startup_s
    if per_run <= 0:
        return None
    return max(1, math.ceil((est_s - startup_s) / per_run))


def continuations_needed(est_hours: float, startup_s: float, time_limit: str, lead_s: int) -> int:
    """Time-limit continuations a requeued stage needs by its estimate (the runs `attempts` counts, less the
    first)."""
    runs = attempts(est_hours * 3600, startup_s, parse_time_minutes(time_limit) * 60, lead_s)
    return max(0, (runs or 1) - 1)


def pipeline_nodes(pp: int, gpn: int, cap: int) -> int | None:
    """The fewest nodes (at most `cap`) whose GPUs hold a pipeline of `pp` stages in equal shares."""
    return next((n for n in range(math.ceil(pp / gpn), min(cap, pp) + 1) if pp % n == 0), None)
