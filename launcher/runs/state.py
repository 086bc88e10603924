"""One state machine: from the evidence about a stage to its state, and from the stages to the run's.

Evidence comes from the registry (was the stage submitted, did the user cancel it), the scheduler
(squeue, sacct, `sacct -c`, or the local supervisor, normalised by the backends into `JobInfo`)
and the run's markers and log (jobs.contract). `decide_stage` is a pure function written as a
decision table: the first rule whose condition holds gives the state. Nothing here does I/O.

A job the scheduler does not report (`Evidence.job` None) has ended: slurmctld lists every job it holds,
ended ones for MinJobAge after their end, and the Slurm backend drops accounting rows that lag behind it
(`backends.slurm.merge_accounting`; the local backend drops jobs whose process or supervisor is gone). So
no grace period is needed before the markers decide, even while accounting lags or is disabled: they give
DONE, FAILED (with the task's code) or INCOMPLETE, and a job that left no end marker is LOST (killed, or
cancelled before it started) until accounting, once it records the end, names it. `resume` reruns a LOST
stage as it reruns a FAILED one.

Times from two clocks are compared with `CLOCK_SKEW_S` of slack; which attempt a marker belongs to is
decided by job id, never by time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, Optional

from jobs.contract import Markers, Progress

from ..backends.base import SCHEDULER_PENDING, SCHEDULER_RUNNING, JobInfo


class StageState(str, enum.Enum):
    """What a stage is doing, as status shows it and `--json` carries it (the value)."""

    NOT_SUBMITTED = "NOT_SUBMITTED"   # rendered, never queued
    PENDING = "PENDING"               # queued: waiting for dependencies, resources, or a requeue
    RUNNING = "RUNNING"
    STALLED = "STALLED"               # running, but its progress has not advanced for too long
    DONE = "DONE"                     # the complete marker lists outputs that all exist
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    CANCELLING = "CANCELLING"         # the user cancelled it; the scheduler is still ending the job
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    PREEMPTED = "PREEMPTED"
    INCOMPLETE = "INCOMPLETE"         # the job ended with exit 0 but without its complete marker
    LOST = "LOST"                     # the scheduler forgot the job and the markers cannot tell its end

    def __str__(self) -> str:
        return self.value


# Stages whose job still exists: never resubmitted over, cancellable (a CANCELLING one again, harmlessly).
LIVE = frozenset({StageState.PENDING, StageState.RUNNING, StageState.STALLED, StageState.CANCELLING})
BROKEN = frozenset({StageState.FAILED, StageState.TIMEOUT, StageState.NODE_FAIL, StageState.OUT_OF_MEMORY,
                    StageState.PREEMPTED, StageState.INCOMPLETE, StageState.LOST})


class RunState(str, enum.Enum):
    """What a run is doing, derived from its stages' states (`decide_run`)."""

    RENDERED = "RENDERED"             # a dry run: written, never submitted
    SUBMIT_FAILED = "SUBMIT_FAILED"   # the scheduler refused a stage; nothing of it is queued
    PENDING = "PENDING"               # stages are queued, none runs yet
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    PARTIAL = "PARTIAL"               # nothing live, some stages done, others never submitted

    def __str__(self) -> str:
        return self.value


# The scheduler states of an ended job (Slurm's names), by the stage state each gives.
SCHEDULER_ENDED = {
    "COMPLETED": None,  # DONE or INCOMPLETE: the markers decide
    "FAILED": StageState.FAILED, "BOOT_FAIL": StageState.FAILED, "DEADLINE": StageState.TIMEOUT,
    "CANCELLED": StageState.CANCELLED, "REVOKED": StageState.CANCELLED, "TIMEOUT": StageState.TIMEOUT,
    "NODE_FAIL": StageState.NODE_FAIL, "OUT_OF_MEMORY": StageState.OUT_OF_MEMORY,
    "PREEMPTED": StageState.PREEMPTED,
}


CLOCK_SKEW_S = 5.0
"""How far the compute nodes' clocks (the `started` line, the JSON markers' times, progress lines) may be from
the login node's (status's `now`). NTP keeps them within milliseconds; a node whose NTP lags can be seconds
off. Where two such times are compared, a difference within this margin means nothing."""


@dataclass(frozen=True)
class Evidence:
    """Everything known about one stage at one moment."""

    job_id: Optional[str]                   # the registry's current job id (None: never submitted)
    cancelled_by_user: bool
    job: Optional[JobInfo]                  # None: the scheduler no longer knows the job: it has ended
    markers: Markers
    progress: Progress = field(default_factory=Progress)
    now: float = 0.0
    stall_after_s: Optional[float] = None   # a running stage with older progress is STALLED


@dataclass(frozen=True)
class Decision:
    state: StageState
    reason: Optional[str]
    rule: str                               # which row of the table decided, for `status --json` and tests


def _ours(ev: Evidence) -> bool:
    """The markers were written by the registry's current job (not an earlier attempt's job)."""
    started = ev.markers.started
    return started is not None and started.job_id == ev.job_id


def _quiet_since(ev: Evidence) -> Optional[float]:
    """When the stage last showed life: its last progress line, or the current attempt's start if later
    (a continuation appends to its job's log, which ends with the previous attempt's steps until its first)."""
    if ev.progress.time is None:
        return None
    return max(ev.progress.time, ev.markers.started.time) if _ours(ev) else ev.progress.time


def _stalled(ev: Evidence) -> bool:
    """Quiet for longer than allowed, by more than the clocks of node and login node may disagree."""
    since = _quiet_since(ev)
    if ev.stall_after_s is None or since is None:
        return False
    return ev.now - since > ev.stall_after_s + CLOCK_SKEW_S


def _ended_state(ev: Evidence) -> Optional[StageState]:
    return SCHEDULER_ENDED.get(ev.job.state) if ev.job else None


# Reasons that say why a job waited, not why it ended: accounting keeps the last one it had.
PENDING_REASONS = frozenset({None, "None", "Dependency", "Resources", "Priority", "BeginTime", "JobHeldUser",
                             "JobHeldAdmin", "ReqNodeNotAvail", "PartitionTimeLimit", "QOSMaxJobsPerUserLimit"})
ENDING_REASONS = {StageState.FAILED: "NonZeroExitCode", StageState.TIMEOUT: "TimeLimit",
                  StageState.NODE_FAIL: "NodeDown", StageState.OUT_OF_MEMORY: "OutOfMemory",
                  StageState.PREEMPTED: "Preempted"}


def _ended_reason(ev: Evidence) -> Optional[str]:
    """Why an ended job ended: the scheduler's own reason where it says so (squeue keeps it while
    slurmctld holds the job); else derived, since accounting keeps only the last pending reason."""
    if ev.job.reason not in PENDING_REASONS:
        return ev.job.reason
    state = _ended_state(ev)
    if state == StageState.CANCELLED:
        if ev.cancelled_by_user:
            return "cancelled by user"
        never_started = not ev.job.nodes and not ev.job.elapsed_s and ev.markers.started is None
        if never_started:
            return "DependencyNeverSatisfied"  # --kill-on-invalid-dep: a stage it depends on failed
        return "cancelled"
    return ENDING_REASONS.get(state)


def _pending_reason(ev: Evidence) -> Optional[str]:
    """Why a job waits. One that already started under this job id was requeued: by its own continuation
    (the time-limit signal left a continue marker) or by Slurm (a node failed under it, or preemption)."""
    waiting = ev.job.reason if ev.job.reason not in (None, "None") else None
    if _ours(ev) or ev.job.state != "PENDING":
        why = "continuing after its time limit" if ev.markers.continue_requested else \
            "requeued by Slurm (a node failure or preemption)"
        return f"{why}; waiting for {waiting}" if waiting else why
    return waiting


Rule = tuple[str, Callable[[Evidence], bool], Callable[[Evidence], StageState], Callable[[Evidence], Optional[str]]]

# The decision table, in order: the first row whose condition holds decides.
RULES: tuple[Rule, ...] = (
    ("never submitted", lambda ev: ev.job_id is None,
     lambda ev: StageState.NOT_SUBMITTED, lambda ev: None),
    ("scheduler: live, cancelled by user", lambda ev: ev.job is not None and ev.cancelled_by_user
     and ev.job.state in SCHEDULER_RUNNING | SCHEDULER_PENDING,
     lambda ev: StageState.CANCELLING, lambda ev: "cancelled by user; the scheduler is ending the job"),
    ("scheduler: running, progress stale", lambda ev: ev.job is not None and ev.job.state in SCHEDULER_RUNNING
     and _stalled(ev),
     lambda ev: StageState.STALLED,
     lambda ev: f"no progress for {ev.now - _quiet_since(ev):.0f} s"),
    ("scheduler: running", lambda ev: ev.job is not None and ev.job.state in SCHEDULER_RUNNING,
     lambda ev: StageState.RUNNING, lambda ev: ev.job.reason),
    ("scheduler: pending", lambda ev: ev.job is not None and ev.job.state in SCHEDULER_PENDING,
     lambda ev: StageState.PENDING, _pending_reason),
    ("complete marker", lambda ev: ev.markers.complete,
     lambda ev: StageState.DONE, lambda ev: None),
    ("scheduler: completed without the complete marker", lambda ev: ev.job is not None and ev.job.state == "COMPLETED",
     lambda ev: StageState.INCOMPLETE, lambda ev: "exit 0 but no complete marker, or outputs missing"),
    ("scheduler: ended", lambda ev: _ended_state(ev) is not None,
     lambda ev: _ended_state(ev), _ended_reason),
    ("scheduler: unknown state", lambda ev: ev.job is not None,
     lambda ev: StageState.LOST, lambda ev: f"the scheduler reports {ev.job.state}"),
    ("markers: a rank recorded its failure", lambda ev: _ours(ev) and ev.markers.failure is not None,
     lambda ev: StageState.FAILED, lambda ev: None),
    ("markers: finished non-zero", lambda ev: _ours(ev) and ev.markers.finished_rc not in (None, 0),
     lambda ev: StageState.FAILED, lambda ev: None),
    ("markers: finished 0 without the complete marker", lambda ev: _ours(ev) and ev.markers.finished_rc == 0,
     lambda ev: StageState.INCOMPLETE, lambda ev: "exit 0 but no complete marker, or outputs missing"),
    ("markers: started, never finished", lambda ev: _ours(ev),
     lambda ev: StageState.LOST, lambda ev: "the scheduler no longer knows the job and it wrote no finish marker"),
    ("cancelled before it started", lambda ev: ev.cancelled_by_user,
     lambda ev: StageState.CANCELLED, lambda ev: "cancelled by user"),
    ("no trace", lambda ev: True,
     lambda ev: StageState.LOST, lambda ev: "the scheduler no longer knows the job and it never started"),
)


def decide_stage(ev: Evidence) -> Decision:
    for name, holds, state, reason in RULES:
        if holds(ev):
            return Decision(state(ev), reason(ev), name)
    raise AssertionError("the last rule always holds")


@dataclass(frozen=True)
class ExitStatus:
    """The exit code to show for a stage, and where it came from."""

    code: Optional[int]
    signal: Optional[int] = None
    exception: Optional[str] = None
    source: str = ""


def exit_status(ev: Evidence, state: StageState) -> ExitStatus:
    """The tasks' own code first (the failure marker), then the script's, then the scheduler's."""
    if state in LIVE or state == StageState.NOT_SUBMITTED:
        return ExitStatus(None)
    failure = ev.markers.failure
    if _ours(ev) and failure is not None and (failure.job_id in (None, ev.job_id)):
        return ExitStatus(failure.exit_code, exception=failure.exception, source="task")
    if _ours(ev) and ev.markers.finished_rc is not None and not (ev.job and ev.job.signal):
        return ExitStatus(ev.markers.finished_rc, source="script")
    if ev.job is not None and (ev.job.exit_code is not None or ev.job.signal):
        if ev.job.signal:
            return ExitStatus(128 + ev.job.signal, signal=ev.job.signal, source=ev.job.source)
        return ExitStatus(ev.job.exit_code, source=ev.job.source)
    return ExitStatus(None)


def decide_run(stage_states: list[StageState], submit_failed: bool) -> RunState:
    """The run's state from its stages' (and whether its last submission failed)."""
    states = set(stage_states)
    if not states or states == {StageState.DONE}:
        return RunState.DONE
    if states & {StageState.RUNNING, StageState.STALLED}:
        return RunState.RUNNING
    if StageState.PENDING in states:
        return RunState.RUNNING if StageState.DONE in states else RunState.PENDING
    if states & BROKEN:
        return RunState.FAILED
    if states & {StageState.CANCELLED, StageState.CANCELLING}:  # the user's cancel counts at once
        return RunState.CANCELLED
    if states == {StageState.NOT_SUBMITTED}:
        return RunState.SUBMIT_FAILED if submit_failed else RunState.RENDERED
    return RunState.SUBMIT_FAILED if submit_failed else RunState.PARTIAL


LIVE_RUN_STATES = frozenset({RunState.PENDING, RunState.RUNNING})
