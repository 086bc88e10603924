"""The one interface every backend implements, and what it reports about jobs.

An executor renders a stage's script, checks what must hold before anything is created, submits a
run's stages (all or nothing), queries many runs' jobs in one batched call, and cancels jobs. What
the planner needs to know of it is its traits (launcher/config/executors.py). Nothing outside
`launcher/backends/` and that table branches on which executor a run uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional, Protocol, Sequence

from jobs.contract import RunLayout

from ..config.executors import ExecutorTraits
from ..config.profile import ClusterProfile
from ..planning.plan import Plan, StagePlan

# Scheduler states (Slurm's own names; the local supervisor uses the same), by what they mean here.
SCHEDULER_RUNNING = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "RESIZING"})
SCHEDULER_PENDING = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "STOPPED",
                               "RESV_DEL_HOLD", "SPECIAL_EXIT"})
SCHEDULER_LIVE = SCHEDULER_RUNNING | SCHEDULER_PENDING


@dataclass(frozen=True)
class JobInfo:
    """What a scheduler says about one job, whatever it calls things."""

    job_id: str
    state: str                     # the scheduler's own state name (upper case)
    reason: Optional[str] = None   # why it is pending, or why it ended (DependencyNeverSatisfied, ...)
    elapsed_s: Optional[float] = None
    time_limit: Optional[str] = None
    nodes: Optional[str] = None
    exit_code: Optional[int] = None
    signal: Optional[int] = None   # the signal that ended the job, if one did
    restarts: int = 0
    start_time: Optional[float] = None
    end_time: Optional[float] = None
    source: str = ""               # squeue, sacct, jobcomp, local

    @property
    def live(self) -> bool:
        return self.state in SCHEDULER_LIVE


class RunHandle(Protocol):
    """What a backend reads of a run (launcher.runs.registry.Run is one): where it lives, its plan, its profile."""

    id: str
    dir: str
    layout: RunLayout

    @property
    def plan(self) -> Plan: ...

    @property
    def profile(self) -> ClusterProfile: ...


@dataclass(frozen=True)
class JobRef:
    """One job of one run, as the registry knows it."""

    run: RunHandle
    stage: str
    job_id: str


@dataclass
class QueryResult:
    jobs: dict[str, JobInfo] = field(default_factory=dict)   # by job id; absent = the scheduler forgot it
    notes: list[str] = field(default_factory=list)           # what could not be said, for people


@dataclass(frozen=True)
class Check:
    name: str
    result: str  # ok | warn | FAIL
    detail: str


class Executor(Protocol):
    traits: ClassVar[ExecutorTraits]

    def render_script(self, run_id: str, run_dir: str, profile: ClusterProfile, stage: StagePlan,
                      stages: Sequence[StagePlan]) -> str:
        """The stage's script, as a person can read and rerun it (`stages`: the run's)."""

    def preflight(self, profile: ClusterProfile, plan_stages: Sequence[StagePlan]) -> None:
        """Raise UserError if the run cannot start here; called before anything is created or queued."""

    def checks(self, profile: ClusterProfile) -> list[Check]:
        """`minitron check`: what this backend can verify about the profile."""

    def submit(self, run: RunHandle, stages: Sequence[str], waiting_on: dict[str, str]) -> dict[str, str]:
        """Queue `stages` (dependency order) after their parents (`waiting_on`: live parent job ids by
        stage). Returns stage → job id. On failure, cancels what it queued and raises SubmitFailed."""

    def query(self, jobs: Sequence[JobRef]) -> QueryResult:
        """Everything the backend knows about these jobs, in one batched call for all runs."""

    def cancel(self, jobs: Sequence[JobRef]) -> None:
        """Stop these jobs (and their processes)."""
