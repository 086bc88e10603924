"""Measured stage times, kept per (profile, model shape, layout) so that `plan` can use them.

A finished stage is recorded as its startup seconds (everything that is not a training step:
process start, imports, checkpoint load and save) and its seconds per step. The planner reads the
records back and prefers them to its model. The file is a cache the launcher alone writes:
`$MINITRON_HOME/calibration.json`, mode 0600, replaced atomically, never through a symlink. Finished
runs are recorded by `minitron calibrate` (app/commands.py) and by the local executor's supervisor when
its run ends (backends/local_supervisor.py); `plan` only reads.
"""

from __future__ import annotations

import fcntl
import json
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from jobs.contract import Estimate, RunLayout, parse_progress, read_markers, write_text_atomic

from ..core.files import minitron_home, private_dir, read_private_file, read_tail
from .plan import StagePlan

FILE_NAME = "calibration.json"
LOCK_NAME = "calibration.lock"
VERSION = 1
# The newest runs per key are kept: enough for a stable median, small enough to read in a blink.
MAX_RUNS_PER_KEY = 20
MAX_KEYS = 2000
MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_KEY_CHARS = 300


@dataclass(frozen=True)
class Calibration:
    """What earlier runs measured for one key: medians over `runs` records."""

    runs: int
    startup_s: float
    step_s: Optional[float]


def calibration_path() -> str:
    return os.path.join(minitron_home(), FILE_NAME)


# -- keys -----------------------------------------------------------------------------------------
def profile_key(profile: Any) -> str:
    """The profile's file name without extension (`device-h200`), plus its GPU model so that a
    copied profile pointed at other hardware does not inherit the original's numbers."""
    source = getattr(profile, "source", "") or "profile"
    name = os.path.splitext(os.path.basename(source))[0]
    return f"{name}:{profile.gpu.model if profile.gpus_per_node and profile.gpu else 'cpu'}"


def shape_key(shape: Any, teacher: Any = None) -> str:
    """Layers, hidden, FFN, heads, query groups, vocab of a model (and of its teacher when distilling)."""
    def one(s: Any) -> str:
        return (f"L{s.num_layers}-H{s.hidden_size}-F{s.ffn_hidden_size}-A{s.num_attention_heads}"
                f"-G{s.num_query_groups}-V{s.vocab_size}")
    return one(shape) + (f"+teacher:{one(teacher)}" if teacher is not None else "")


def layout_key(stage: StagePlan) -> str:
    """Kind and layout of a stage: what changes its startup and step time."""
    kind = stage.kind
    if stage.stage_kind.estimate == Estimate.PRUNING:  # calibrated (width) and layer-dropping (depth) differ
        kind = f"{kind}-calibrate" if stage.steps else f"{kind}-drop"
    return (f"{kind}:{stage.nodes}x{stage.gpus_per_node}:tp{stage.tp}pp{stage.pp}cp{stage.cp}"
            f"dp{stage.dp}:mbs{stage.micro_batch_size}:gbs{stage.global_batch_size}"
            f":seq{stage.seq_length}:{stage.attention}:{stage.container or 'none'}")


def stage_keys(stage: StagePlan) -> tuple[str, str, str]:
    """(profile_key, shape_key, layout_key) as the planner stored them on the stage."""
    return stage.calibration_profile_key, stage.calibration_shape_key, layout_key(stage)


def _record_key(profile: str, shape: str, layout: str) -> str:
    return f"{profile}|{shape}|{layout}"


# -- storage --------------------------------------------------------------------------------------
def _read_raw(path: str) -> dict[str, Any]:
    """The stored records; a missing file is empty. A symlink or foreign file is refused, a damaged or
    oversized one is ignored (it is a cache: the next record replaces it)."""
    try:
        text = read_private_file(path, MAX_FILE_BYTES, "calibration data", "MINITRON_HOME")
        data = json.loads(text) if text is not None else None
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("records"), dict):
        return {}
    return data["records"]


def load() -> dict[str, Calibration]:
    """Every key's medians, for the planner: {record key: Calibration}."""
    out: dict[str, Calibration] = {}
    for key, runs in _read_raw(calibration_path()).items():
        good = [r for r in runs if isinstance(r, dict) and _number(r.get("startup_s")) is not None] \
            if isinstance(runs, list) else []
        if not good:
            continue
        steps = [r["step_s"] for r in good if _number(r.get("step_s")) is not None]
        out[key] = Calibration(runs=len(good), startup_s=statistics.median(r["startup_s"] for r in good),
                               step_s=statistics.median(steps) if steps else None)
    return out


def lookup(records: Mapping[str, Calibration], profile: str, shape: str, layout: str) -> Optional[Calibration]:
    return records.get(_record_key(profile, shape, layout))


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0 <= value < 1e9 else None


@dataclass(frozen=True)
class Measurement:
    """One finished stage's times under its keys. startup_s: wall time not spent in training steps (the
    whole wall time for a stage without steps); step_s: (wall − startup_s) / steps, so validation and
    checkpoint saves are spread over the steps as they were in the run. `source` names it (run/stage/job):
    one already recorded is not counted twice."""

    profile_key: str
    shape_key: str
    layout_key: str
    startup_s: float
    step_s: Optional[float] = None
    steps: Optional[int] = None
    source: Optional[str] = None

    def check(self) -> None:
        for name in ("profile_key", "shape_key", "layout_key"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or len(value) > MAX_KEY_CHARS or "|" in value:
                raise ValueError(f"{name} must be a non-empty string of at most {MAX_KEY_CHARS} characters "
                                 f"without '|'")
        if _number(self.startup_s) is None:
            raise ValueError(f"startup_s must be a number of seconds ≥ 0, got {self.startup_s!r}")
        if self.step_s is not None and _number(self.step_s) is None:
            raise ValueError(f"step_s must be None or a number of seconds ≥ 0, got {self.step_s!r}")


def recorded_sources() -> set[str]:
    """The `source` of every stored measurement: what a finished run need not measure again."""
    return {r["source"] for runs in _read_raw(calibration_path()).values() if isinstance(runs, list)
            for r in runs if isinstance(r, dict) and isinstance(r.get("source"), str)}


def record(measurements: Sequence[Measurement]) -> int:
    """Add measurements under one lock, one read and at most one write; returns how many were new."""
    for m in measurements:
        m.check()
    if not measurements:
        return 0
    directory = private_dir(minitron_home(), "MINITRON_HOME", create=True, key="MINITRON_HOME")
    path = os.path.join(directory, FILE_NAME)
    lock_fd = os.open(os.path.join(directory, LOCK_NAME),
                      os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
    added = 0
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        records = _read_raw(path)
        for m in measurements:
            key = _record_key(m.profile_key, m.shape_key, m.layout_key)
            runs = records.pop(key, [])
            runs = runs if isinstance(runs, list) else []
            if m.source is not None and any(isinstance(r, dict) and r.get("source") == m.source for r in runs):
                records[key] = runs
                continue
            runs = runs[-(MAX_RUNS_PER_KEY - 1):]
            runs.append({"startup_s": round(float(m.startup_s), 3),
                         "step_s": None if m.step_s is None else round(float(m.step_s), 6),
                         "steps": m.steps, "at": int(time.time()), "source": m.source})
            records[key] = runs  # re-inserted last: the oldest keys are the first dropped
            added += 1
        while len(records) > MAX_KEYS:
            records.pop(next(iter(records)))
        if added:
            write_text_atomic(path, json.dumps({"version": VERSION, "records": records}, indent=1), 0o600)
    finally:
        os.close(lock_fd)
    return added


# -- a finished run's measurements -----------------------------------------------------------------
def measured_times(layout: RunLayout, stage: StagePlan) -> Optional[tuple[float, Optional[float], str]]:
    """(startup seconds, seconds per step, job id) of a complete stage's last attempt, from its markers and log."""
    markers = read_markers(layout, stage.name)
    if not (markers.complete and markers.started and markers.finished_at):
        return None
    wall = markers.finished_at - markers.started.time
    steps = stage.steps if stage.stage_kind.trains else None
    log = layout.stage_log(stage.name, markers.started.job_id)
    step_s = parse_progress(read_tail(log)).step_time_s if (steps and log) else None
    if wall <= 0:
        return None
    startup = max(0.0, wall - step_s * steps) if step_s and steps else wall
    return startup, step_s, markers.started.job_id


def record_run(run_id: str, layout: RunLayout, stages: Sequence[StagePlan]) -> int:
    """Record the measured times of a run's complete stages (each attempt once): one read of the store,
    markers and logs read only for stages it does not hold yet. Returns how many were new."""
    known = recorded_sources()
    new = []
    for stage in stages:
        if not stage.calibration_profile_key:
            continue
        markers = read_markers(layout, stage.name)
        if markers.started is None or f"{run_id}/{stage.name}/{markers.started.job_id}" in known:
            continue
        measured = measured_times(layout, stage)
        if measured is not None:
            startup, step_s, job_id = measured
            new.append(Measurement(*stage_keys(stage), startup_s=startup, step_s=step_s,
                                   steps=stage.steps if step_s else None, source=f"{run_id}/{stage.name}/{job_id}"))
    return record(new)
