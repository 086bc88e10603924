"""Status: gather the evidence for one run or many (registry, scheduler, markers, logs) and let the
state machine (state.py) decide each stage's state and the run's. It only reads: nothing is written.

Markers come first: a run whose stages are all complete needs no scheduler call at all. Every other
job of every run asked about goes into one batched executor query per backend.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Optional

from jobs.contract import Markers, Progress, parse_progress, read_markers

from ..backends import executor_for
from ..backends.base import JobRef, QueryResult
from ..core.files import MIN_FREE_BYTES, free_bytes, read_tail
from ..planning.plan import StagePlan
from .registry import Run, RunRecord
from .smoke import smoke_verdict
from .state import (BROKEN, CLOCK_SKEW_S, LIVE, Evidence, RunState, StageState, decide_run, decide_stage,
                    exit_status)

TAIL_LINES = 12
STALL_STEPS = 10          # a training stage is STALLED after this many step times without progress ...
STALL_FLOOR_S = 600.0     # ... and never sooner than this


@dataclass
class StageStatus:
    name: str
    state: StageState
    job_id: Optional[str] = None
    reason: Optional[str] = None
    elapsed_s: Optional[float] = None
    time_limit: Optional[str] = None
    nodes: Optional[str] = None
    exit_code: Optional[int] = None
    signal: Optional[str] = None            # SIGTERM, ... when a signal ended the job
    exception: Optional[str] = None         # the failing rank's last exception line
    exit_source: Optional[str] = None       # task (the failure marker), script, sacct, jobcomp, local
    step: Optional[int] = None
    total_steps: Optional[int] = None
    train_loss: Optional[float] = None
    val_loss: Optional[float] = None
    eta_s: Optional[float] = None
    est_s: Optional[float] = None           # the plan's estimate of the stage's wall time
    gpus: int = 0                           # nodes × GPUs per node, as planned
    est_gpu_hours: Optional[float] = None
    gpu_hours: Optional[float] = None       # elapsed × GPUs, once the stage has ended
    attempt: int = 0
    source: str = ""
    rule: str = ""
    log_path: Optional[str] = None
    log_tail: list[str] = field(default_factory=list)


@dataclass
class RunReport:
    run_id: str
    run_dir: str
    overall: RunState
    stages: list[StageStatus]
    notes: list[str] = field(default_factory=list)
    totals: dict[str, Optional[float]] = field(default_factory=dict)  # plan vs actual for the whole run
    verdict: Optional[str] = None      # a smoke run's last word: is the cluster ready for the real recipe?

    @property
    def state(self) -> RunState:
        return self.overall

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _signal_name(number: Optional[int]) -> Optional[str]:
    if not number:
        return None
    import signal
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _stall_after(planned: Optional[StagePlan], progress: Progress) -> Optional[float]:
    """How long a running training stage may go without a step before it is STALLED: STALL_STEPS of its
    measured step time, and never less than a floor (half the profile's stall_timeout_s when it has one,
    since the job then ends itself at the full timeout)."""
    if planned is None or not planned.stage_kind.trains or progress.time is None:
        return None
    floor = planned.stall_timeout_s / 2 if planned.stall_timeout_s else STALL_FLOOR_S
    return max(STALL_STEPS * (progress.step_time_s or 0.0), floor)


def _span(start: float, end: float) -> Optional[float]:
    """Seconds from `start` to `end`, read on two clocks (node and login node, or two nodes): never negative;
    None when `end` precedes `start` by more than the clocks may disagree (`CLOCK_SKEW_S`), since the two then
    belong to different attempts (a complete marker written before a requeue started the current attempt)."""
    if end < start - CLOCK_SKEW_S:
        return None
    return max(0.0, end - start)


def stage_status(run: Run, name: str, planned: Optional[StagePlan], job_id: Optional[str], cancelled: bool,
                 result: QueryResult, now: float, markers: Markers) -> StageStatus:
    job = result.jobs.get(job_id) if job_id else None
    log = run.layout.stage_log(name, job_id) if job_id else None
    lines = read_tail(log) if log else []
    progress = parse_progress(lines)
    evidence = Evidence(job_id=job_id, cancelled_by_user=cancelled, job=job, markers=markers, progress=progress,
                        now=now, stall_after_s=_stall_after(planned, progress))
    decision = decide_stage(evidence)
    ended = exit_status(evidence, decision.state)
    status = StageStatus(name=name, state=decision.state, job_id=job_id, reason=decision.reason,
                         time_limit=planned.time_limit if planned else None, exit_code=ended.code, signal=_signal_name(ended.signal),
                         exception=ended.exception, exit_source=ended.source or None, rule=decision.rule,
                         source=job.source if job else ("markers" if job_id else ""), log_path=log)
    if markers.started:
        status.attempt = markers.started.attempt
    if job is not None:
        status.elapsed_s, status.nodes = job.elapsed_s, job.nodes
    if status.elapsed_s is None and markers.started:  # squeue's INVALID: login clock behind slurmctld's
        if decision.state in LIVE:
            status.elapsed_s = _span(markers.started.time, now)
        elif decision.state == StageState.DONE and markers.finished_at:
            status.elapsed_s = _span(markers.started.time, markers.finished_at)
    if planned is not None:
        status.est_s = round(planned.est_hours * 3600, 1)
        status.gpus = planned.nodes * planned.gpus_per_node
        status.est_gpu_hours = planned.est_gpu_hours
    if decision.state not in LIVE and status.elapsed_s is not None:
        status.gpu_hours = round(status.elapsed_s * status.gpus / 3600, 4)
    if progress.step is not None:
        status.step, status.train_loss, status.val_loss = progress.step, progress.train_loss, progress.val_loss
        status.total_steps = progress.total or (planned.steps if planned else None)
    if decision.state in BROKEN or decision.state == StageState.CANCELLED and markers.started:
        status.log_tail = lines[-TAIL_LINES:]
    elif decision.state == StageState.STALLED:
        status.log_tail = lines[-1:]
    if decision.state in (StageState.RUNNING, StageState.STALLED) and progress.step and status.total_steps:
        per_step = progress.step_time_s or ((status.elapsed_s or 0) / progress.step)
        status.eta_s = per_step * (status.total_steps - progress.step) if per_step else None
    return status


def _needs_scheduler(run: Run, record: RunRecord) -> list[JobRef]:
    """The jobs whose state the markers cannot settle: submitted and not complete."""
    refs = []
    for name, stage in record.stages.items():
        if stage.job_id and not read_markers(run.layout, name).complete:
            refs.append(JobRef(run=run, stage=name, job_id=stage.job_id))
    return refs


def settled_state(run: Run, record: RunRecord) -> Optional[RunState]:
    """The run's state when the markers alone settle it (every stage complete), else None."""
    if record.stages and all(read_markers(run.layout, name).complete for name in record.stages):
        return RunState.DONE
    if not any(stage.job_id for stage in record.stages.values()):
        return RunState.SUBMIT_FAILED if record.submit_failed else RunState.RENDERED
    return None


def query_runs(runs: Iterable[tuple[Run, RunRecord]]) -> dict[str, QueryResult]:
    """One batched query per executor for every job of every run that the markers cannot settle."""
    runs = list(runs)
    by_executor: dict[str, list[JobRef]] = {}
    for run, record in runs:
        by_executor.setdefault(record.executor, []).extend(_needs_scheduler(run, record))
    results = {kind: (executor_for(kind).query(refs) if refs else QueryResult()) for kind, refs in by_executor.items()}
    return results


def run_report(run: Run, record: RunRecord, result: QueryResult, now: Optional[float] = None) -> RunReport:
    now = time.time() if now is None else now
    plan = run.plan
    planned = {s.name: s for s in plan.stages}
    markers = {name: read_markers(run.layout, name) for name in record.stages}
    stages = [stage_status(run, name, planned.get(name), st.job_id, st.cancelled, result, now, markers[name])
              for name, st in record.stages.items()]
    overall = decide_run([s.state for s in stages], record.submit_failed)
    ended = [s for s in stages if s.gpu_hours is not None]
    starts = [m.started.time for m in markers.values() if m.started]
    totals = {"est_wall_s": round(plan.critical_path_hours() * 3600, 1), "est_gpu_hours": round(plan.gpu_hours(), 3),
              "gpu_hours": round(sum(s.gpu_hours for s in ended), 4) if ended else None,
              "wall_s": None}
    finished = [markers[s.name].finished_at for s in stages if s.state == StageState.DONE]
    if overall == RunState.DONE and starts and all(finished):
        totals["wall_s"] = round(max(finished) - min(starts), 1)
    notes = list(result.notes)
    broken = [s.name for s in stages if s.state in BROKEN]
    free = free_bytes(run.dir) if broken else None
    if free is not None and free < MIN_FREE_BYTES:
        notes.append(f"the run directory's file system has {free // 1024} KiB free: a full disk can be why "
                     f"{', '.join(broken)} failed (free space, then `minitron resume`)")
    return RunReport(run_id=run.id, run_dir=run.dir, overall=overall, stages=stages, notes=notes,
                     totals=totals, verdict=smoke_verdict(plan.recipe, overall, stages))


def report_for(run: Run, record: Optional[RunRecord] = None) -> RunReport:
    record = record or run.load_record()
    result = query_runs([(run, record)]).get(record.executor, QueryResult())
    return run_report(run, record, result)
