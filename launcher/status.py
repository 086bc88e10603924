"""Stage status: Slurm's (or the local supervisor's) word, the run's markers and the stage's log.

A stage is DONE only when its complete marker lists outputs that exist; a job Slurm calls COMPLETED
without them is INCOMPLETE. When Slurm has forgotten a job (MinJobAge) and keeps no accounting, the
markers alone tell what happened.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from .executors.base import FAILED_STATES, LIVE_STATES, JobInfo
from .registry import Run, RunState

PROGRESS = re.compile(r"MINITRON_PROGRESS\s+(.*)")
TAIL_BYTES = 256 * 1024
TAIL_LINES = 12
BAD_STATES = FAILED_STATES | {"INCOMPLETE", "LOST"}


@dataclass
class Markers:
    started: Optional[dict[str, Any]] = None
    finished_rc: Optional[int] = None
    complete: bool = False
    continue_requested: bool = False  # the job saved a checkpoint before its limit and asks to go on
    outputs: dict[str, str] = field(default_factory=dict)


def read_markers(run: Run, stage: str) -> Markers:
    markers = Markers()
    try:
        with open(run.paths.marker(stage, "started"), encoding="utf-8") as handle:
            parts = handle.read().split()
        markers.started = {"job_id": parts[0], "host": parts[1], "time": float(parts[2]),
                           "attempt": int(parts[3])} if len(parts) >= 4 else None
    except (OSError, ValueError):
        pass
    try:
        with open(run.paths.marker(stage, "finished"), encoding="utf-8") as handle:
            markers.finished_rc = int(handle.read().strip())
    except (OSError, ValueError):
        pass
    markers.continue_requested = os.path.exists(run.paths.marker(stage, "continue"))
    try:
        with open(run.paths.marker(stage, "complete"), encoding="utf-8") as handle:
            outputs = json.load(handle).get("outputs", {})
        markers.outputs = {k: v for k, v in outputs.items() if isinstance(v, str)}
        markers.complete = all(os.path.exists(p) for p in markers.outputs.values())
    except (OSError, ValueError, AttributeError):
        pass
    return markers


@dataclass
class Progress:
    step: Optional[int] = None
    total: Optional[int] = None
    train_loss: Optional[float] = None
    val_loss: Optional[float] = None


def read_tail(path: str, max_bytes: int = TAIL_BYTES) -> list[str]:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[1:] if size > max_bytes else lines


def parse_progress(lines: list[str]) -> Progress:
    progress = Progress()
    for line in lines:
        match = PROGRESS.search(line)
        if not match:
            continue
        fields = dict(item.split("=", 1) for item in match.group(1).split() if "=" in item)
        try:
            if "step" in fields:
                progress.step = int(fields["step"])
            if "total" in fields:
                progress.total = int(fields["total"])
            if "train_loss" in fields:
                progress.train_loss = float(fields["train_loss"])
            if "val_loss" in fields:
                progress.val_loss = float(fields["val_loss"])
        except ValueError:
            continue
    return progress


def stage_log(run: Run, stage: str, job_id: str | None) -> str | None:
    """The stage's current log: Slurm's `<stage>-<jobid>.out`, or the local executor's `<stage>.log`."""
    for name in ([f"{stage}-{job_id}.out"] if job_id else []) + [f"{stage}.log"]:
        path = os.path.join(run.paths.logs, name)
        if os.path.exists(path):
            return path
    candidates = sorted((f for f in os.listdir(run.paths.logs) if f.startswith(f"{stage}-")),
                        key=lambda f: os.path.getmtime(os.path.join(run.paths.logs, f)))
    return os.path.join(run.paths.logs, candidates[-1]) if candidates else None


@dataclass
class StageStatus:
    name: str
    state: str
    job_id: Optional[str] = None
    reason: Optional[str] = None
    elapsed_s: Optional[float] = None
    time_limit: Optional[str] = None
    nodes: Optional[str] = None
    exit_code: Optional[int] = None
    step: Optional[int] = None
    total_steps: Optional[int] = None
    train_loss: Optional[float] = None
    val_loss: Optional[float] = None
    eta_s: Optional[float] = None
    attempt: int = 0
    source: str = ""
    log_path: Optional[str] = None
    log_tail: list[str] = field(default_factory=list)


@dataclass
class RunReport:
    run_id: str
    run_dir: str
    overall: str  # DONE | RUNNING | FAILED | NOT_SUBMITTED
    stages: list[StageStatus]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def stage_status(run: Run, name: str, job_id: str | None, info: JobInfo | None, cancelled: bool,
                 planned_steps: int | None, time_limit: str | None) -> StageStatus:
    markers = read_markers(run, name)
    status = StageStatus(name=name, state="NOT_SUBMITTED", job_id=job_id, time_limit=time_limit)
    if markers.started:
        status.attempt = markers.started["attempt"]
    if info is not None:
        status.state, status.reason, status.elapsed_s = info.state, info.reason, info.elapsed_s
        status.nodes, status.exit_code, status.source = info.nodes, info.exit_code, info.source
        status.time_limit = time_limit or info.time_limit  # the planned limit, in one format
    if status.state == "COMPLETING":
        status.state = "RUNNING"
    live = info is not None and info.live
    if markers.complete and not live:
        status.state = "DONE"
    elif info is None and job_id:
        status.source = "markers"
        if markers.finished_rc is not None:
            status.exit_code = markers.finished_rc
            status.state = "FAILED" if markers.finished_rc != 0 else "INCOMPLETE"
        elif markers.started and markers.started.get("job_id") == job_id:
            status.state = "LOST"
            status.reason = "Slurm no longer knows the job and it wrote no finish marker"
        else:
            status.state = "CANCELLED" if cancelled else "LOST"
    elif status.state == "COMPLETED":
        status.state = "INCOMPLETE"  # Slurm says completed, but the outputs are not all there
        status.reason = "no complete marker or missing outputs"
    if status.exit_code is None and markers.finished_rc is not None and not live:
        status.exit_code = markers.finished_rc
    if status.elapsed_s is None and markers.started and status.state == "RUNNING":
        status.elapsed_s = time.time() - markers.started["time"]
    log = stage_log(run, name, job_id) if os.path.isdir(run.paths.logs) else None
    if log:
        status.log_path = log
        lines = read_tail(log)
        progress = parse_progress(lines)
        status.step, status.train_loss, status.val_loss = progress.step, progress.train_loss, progress.val_loss
        status.total_steps = progress.total or planned_steps if progress.step is not None else None
        if status.state in BAD_STATES:
            status.log_tail = lines[-TAIL_LINES:]
        if status.state == "RUNNING" and progress.step and status.total_steps and status.elapsed_s:
            status.eta_s = status.elapsed_s / progress.step * (status.total_steps - progress.step)
    return status


def overall_state(stages: list[StageStatus]) -> str:
    states = {s.state for s in stages}
    if states == {"DONE"}:
        return "DONE"
    if states & LIVE_STATES:
        return "RUNNING"
    if states & BAD_STATES:
        return "FAILED"
    return "NOT_SUBMITTED" if "NOT_SUBMITTED" in states else "RUNNING"


def run_report(run: Run, state: RunState, infos: dict[str, JobInfo], notes: list[str]) -> RunReport:
    plan = run.load_plan()
    planned = {s["name"]: s for s in plan["stages"]}
    stages = []
    for name, st in state.stages.items():
        info = infos.get(st.job_id) if st.job_id else None
        stages.append(stage_status(run, name, st.job_id, info, st.cancelled, planned[name].get("steps"),
                                   planned[name].get("time_limit")))
    return RunReport(run_id=run.id, run_dir=run.dir, overall=overall_state(stages), stages=stages, notes=notes)
