"""What every executor reports about a job, whatever its scheduler calls things."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class JobInfo:
    job_id: str
    state: str                     # PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, NODE_FAIL, ...
    reason: Optional[str] = None   # why it is pending (Dependency, Resources, DependencyNeverSatisfied, ...)
    elapsed_s: Optional[float] = None
    time_limit: Optional[str] = None
    nodes: Optional[str] = None
    exit_code: Optional[int] = None
    restarts: int = 0
    source: str = ""               # where this came from: squeue, sacct, jobcomp, local

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


LIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
               "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
FAILED_STATES = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
                 "PREEMPTED", "REVOKED"}


class SubmitFailed(Exception):
    """A submission failed part-way; everything it had queued was cancelled."""

    def __init__(self, stage: str, message: str, cancelled: list[str]):
        super().__init__(f"submitting stage {stage} failed: {message}")
        self.stage = stage
        self.message = message
        self.cancelled = cancelled
