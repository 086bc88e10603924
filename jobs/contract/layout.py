"""The run directory's layout: the one place that knows where each file of a run lives."""

from __future__ import annotations

import enum
import os
from typing import Optional


class RunLayout:
    """Where everything of one run lives; the one place that knows the run directory's layout."""

    SUBDIRS = ("stages", "scripts", "logs", "markers", "work")

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.code = os.path.join(run_dir, "code")
        self.stages = os.path.join(run_dir, "stages")
        self.scripts = os.path.join(run_dir, "scripts")
        self.logs = os.path.join(run_dir, "logs")
        self.markers = os.path.join(run_dir, "markers")
        self.work = os.path.join(run_dir, "work")
        self.local = os.path.join(run_dir, "local")  # the local executor's supervisor state
        self.state = os.path.join(run_dir, "state.json")
        self.lock = os.path.join(run_dir, "state.lock")
        self.plan = os.path.join(run_dir, "plan.json")
        self.profile = os.path.join(run_dir, "profile.yaml")
        self.recipe = os.path.join(run_dir, "recipe.yaml")
        self.inputs = os.path.join(run_dir, "inputs.json")

    def stage_config(self, stage: str) -> str:
        return os.path.join(self.stages, f"{stage}.json")

    def script(self, stage: str) -> str:
        return os.path.join(self.scripts, f"{stage}.sh")

    def stage_work(self, stage: str) -> str:
        return os.path.join(self.work, stage)

    def marker(self, stage: str, marker: enum.Enum) -> str:
        """RUN_DIR/markers/<stage>.<marker> for a `markers.Marker`."""
        return os.path.join(self.markers, f"{stage}.{marker.value}")

    def slurm_log_pattern(self, stage: str) -> str:
        """sbatch's --output: one log per job id (`%j`), appended to across requeues."""
        return os.path.join(self.logs, f"{stage}-%j.out")

    def slurm_log(self, stage: str, job_id: str) -> str:
        return os.path.join(self.logs, f"{stage}-{job_id}.out")

    def local_log(self, stage: str) -> str:
        return os.path.join(self.logs, f"{stage}.log")

    def rank_log(self, stage: str, job_id: Optional[str], rank: int) -> str:
        """One rank's copy of its output (jobs/runtime/ranklog.py), beside the stage log: the Slurm job's
        (`<stage>-<job id>.rank<N>.out`), else the local executor's (`<stage>.rank<N>.log`)."""
        if job_id:
            return os.path.join(self.logs, f"{stage}-{job_id}.rank{rank}.out")
        return os.path.join(self.logs, f"{stage}.rank{rank}.log")

    def stage_log(self, stage: str, job_id: Optional[str]) -> Optional[str]:
        """The stage's current log: the Slurm job's, else the local executor's, else its newest."""
        for path in ([self.slurm_log(stage, job_id)] if job_id else []) + [self.local_log(stage)]:
            if os.path.isfile(path):
                return path
        try:
            names = [n for n in os.listdir(self.logs)
                     if n.startswith(f"{stage}-") and n.endswith(".out") and ".rank" not in n]
        except OSError:
            return None
        paths = [os.path.join(self.logs, n) for n in names]
        paths = [p for p in paths if os.path.isfile(p)]
        return max(paths, key=os.path.getmtime) if paths else None
