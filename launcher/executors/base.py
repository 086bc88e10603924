"""The one interface every backend implements, and what it reports about jobs.

An executor renders a stage's script, checks what must hold before anything is created, submits a
run's stages (all or nothing), queries many runs' jobs in one batched call, and cancels jobs.
Nothing outside `launcher/executors/` branches on which executor a run uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol, Sequence

from ..state import JobInfo

if TYPE_CHECKING:
    from ..planner import StagePlan
    from ..profile import ClusterProfile
    from ..registry import Run


@dataclass(frozen=True)
class JobRef:
    """One job of one run, as the registry knows it."""

    run: "Run"
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
    name: ClassVar[str]
    uses_partitions: ClassVar[bool]       # Slurm partitions, accounts and qos mean something here
    max_nodes: ClassVar[int | None]       # None: as many as the profile says
    container_start_s: ClassVar[float]    # starting a stage's container (image cached), for the time model
    signals_before_limit: ClassVar[bool]  # training stages get the checkpoint signal before their time limit

    @staticmethod
    def stages_side_by_side(profile: "ClusterProfile") -> bool:
        """Whether independent stages may run at the same time on the profile's GPUs."""

    @staticmethod
    def takes_whole_nodes(profile: "ClusterProfile") -> bool:
        """Whether a multi-GPU stage holds its nodes alone (the time model's scheduling)."""

    def render_script(self, run_id: str, run_dir: str, profile: "ClusterProfile", stage: "StagePlan",
                      stage_names: Sequence[str]) -> str:
        """The stage's script, as a person can read and rerun it."""

    def preflight(self, profile: "ClusterProfile", plan_stages: Sequence["StagePlan"]) -> None:
        """Raise UserError if the run cannot start here; called before anything is created or queued."""

    def checks(self, profile: "ClusterProfile") -> list[Check]:
        """`minitron check`: what this backend can verify about the profile."""

    def submit(self, run: "Run", stages: Sequence[str], waiting_on: dict[str, str]) -> dict[str, str]:
        """Queue `stages` (dependency order) after their parents (`waiting_on`: live parent job ids by
        stage). Returns stage → job id. On failure, cancels what it queued and raises SubmitFailed."""

    def query(self, jobs: Sequence[JobRef]) -> QueryResult:
        """Everything the backend knows about these jobs, in one batched call for all runs."""

    def cancel(self, jobs: Sequence[JobRef]) -> None:
        """Stop these jobs (and their processes)."""
