"""Slurm: sbatch with dependencies, one batched squeue (+ sacct) per status refresh, scancel.

The client commands are found on PATH and read SLURM_CONF from the environment like any user's.
Status costs at most three client calls per refresh whatever the number of stages: squeue for
everything Slurm still holds in memory, then sacct (or the jobcomp file through `sacct -c`) only
for jobs squeue no longer knows.
"""

from __future__ import annotations

import re
import subprocess
from typing import Iterable

from ..errors import SlurmError
from .base import JobInfo, SubmitFailed

CALL_TIMEOUT_S = 60
SQUEUE_FORMAT = "%i|%T|%r|%M|%l|%D|%N"
SACCT_FIELDS = "JobIDRaw,State,ExitCode,ElapsedRaw,Timelimit,NNodes,NodeList"
UNREACHABLE = ("Unable to contact slurm controller", "Connection refused", "Socket timed out",
               "Zero Bytes were transmitted", "Communication connection failure", "Could not establish")


class SlurmClient:
    """Runs Slurm client commands; counts calls so benchmarks can check status stays batched."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        self.calls.append(argv)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=CALL_TIMEOUT_S,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise SlurmError(argv, 127, f"{argv[0]}: command not found (is this a Slurm login node?)") from None
        except subprocess.TimeoutExpired:
            raise SlurmError(argv, 124, f"no answer within {CALL_TIMEOUT_S} s") from None
        if check and proc.returncode != 0:
            raise SlurmError(argv, proc.returncode, proc.stderr or proc.stdout)
        return proc


def _parse_elapsed(text: str) -> float | None:
    """Slurm's [D-]HH:MM:SS / MM:SS to seconds."""
    match = re.match(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$", text.strip())
    if not match:
        return None
    days, hours, minutes, seconds = (int(x) if x else 0 for x in match.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


def _unreachable(text: str) -> bool:
    return any(marker in text for marker in UNREACHABLE)


class SlurmExecutor:
    name = "slurm"

    def __init__(self, client: SlurmClient | None = None):
        self.client = client or SlurmClient()

    # -- submit ---------------------------------------------------------------------------------
    def submit(self, entries: list[tuple[str, str, list[str]]], live_parents: dict[str, str],
               dependency_type: str = "afterok") -> dict[str, str]:
        """Submit (stage, script, parent stages) in dependency order; all or nothing.

        A parent is waited for when it is in this submission or still live in Slurm (`live_parents`);
        parents that are done need no edge. On any sbatch failure every job this call queued is
        cancelled before SubmitFailed is raised.
        """
        submitted: dict[str, str] = {}
        for stage, script, parent_stages in entries:
            parents = [submitted.get(p) or live_parents[p] for p in parent_stages
                       if p in submitted or p in live_parents]
            argv = ["sbatch", "--parsable", "--kill-on-invalid-dep=yes"]
            if parents:
                argv.append(f"--dependency={dependency_type}:{':'.join(parents)}")
            argv.append(script)
            try:
                proc = self.client.run(argv, check=False)
            except SlurmError as exc:
                self._rollback(submitted)
                raise SubmitFailed(stage, exc.stderr.strip(), list(submitted.values())) from None
            job_id = proc.stdout.strip().split(";")[0]
            if proc.returncode != 0 or not job_id.isdigit():
                self._rollback(submitted)
                message = (proc.stderr or proc.stdout).strip() or f"sbatch exited {proc.returncode}"
                raise SubmitFailed(stage, message, list(submitted.values()))
            submitted[stage] = job_id
        return submitted

    def _rollback(self, submitted: dict[str, str]) -> None:
        if submitted:
            self.client.run(["scancel", *submitted.values()], check=False)

    # -- query ----------------------------------------------------------------------------------
    def query(self, job_ids: Iterable[str]) -> tuple[dict[str, JobInfo], list[str]]:
        """Everything Slurm knows about these jobs, and notes on what it could not say."""
        ids = sorted({j for j in job_ids if j}, key=int)
        notes: list[str] = []
        if not ids:
            return {}, notes
        infos = self._squeue(ids)
        finished = [j for j in ids if j not in infos or not infos[j].live]
        if finished:
            infos.update(self._sacct(finished, notes))
        return infos, notes

    def _squeue(self, ids: list[str]) -> dict[str, JobInfo]:
        argv = ["squeue", "--noheader", "--states=all", f"--jobs={','.join(ids)}", f"--format={SQUEUE_FORMAT}"]
        proc = self.client.run(argv, check=False)
        if proc.returncode != 0:
            if _unreachable(proc.stderr):
                raise SlurmError(argv, proc.returncode, proc.stderr)
            if "Invalid job id" in proc.stderr:
                return {}  # every job has been purged from slurmctld's memory
            raise SlurmError(argv, proc.returncode, proc.stderr)
        infos = {}
        for line in proc.stdout.splitlines():
            parts = line.split("|")
            if len(parts) != 7:
                continue
            job_id, state, reason, elapsed, limit, nodes, nodelist = (p.strip() for p in parts)
            infos[job_id] = JobInfo(job_id=job_id, state=state.split()[0], reason=None if reason in ("None", "") else reason,
                                    elapsed_s=_parse_elapsed(elapsed), time_limit=limit, nodes=nodelist or nodes,
                                    source="squeue")
        return infos

    def _sacct(self, ids: list[str], notes: list[str]) -> dict[str, JobInfo]:
        base = ["sacct", "--noheader", "--parsable2", "--allocations", f"--format={SACCT_FIELDS}",
                f"--jobs={','.join(ids)}"]
        proc = self.client.run(base, check=False)
        if proc.returncode != 0 and "accounting storage is disabled" in (proc.stderr + proc.stdout).lower():
            proc = self.client.run(["sacct", "--completion", *base[1:]], check=False)
            source = "jobcomp"
            if proc.returncode != 0:
                notes.append("Slurm accounting is disabled and no job completion log is readable: finished "
                             "jobs are judged by their markers")
                return {}
        else:
            source = "sacct"
        if proc.returncode != 0:
            if _unreachable(proc.stderr):
                notes.append(f"sacct did not answer: {proc.stderr.strip()}")
                return {}
            notes.append(f"sacct failed: {proc.stderr.strip()}")
            return {}
        infos: dict[str, JobInfo] = {}
        for line in proc.stdout.splitlines():
            parts = line.split("|")
            if len(parts) < 7:
                continue
            job_id, state, exit_code, elapsed, limit, nodes, nodelist = parts[:7]
            if job_id not in ids:
                continue
            code = exit_code.split(":")[0]
            info = JobInfo(job_id=job_id, state=state.split()[0] if state else "UNKNOWN",
                           exit_code=int(code) if code.isdigit() else None,
                           elapsed_s=float(elapsed) if elapsed.isdigit() else _parse_elapsed(elapsed),
                           time_limit=limit or None, nodes=nodelist or nodes or None, source=source)
            infos[job_id] = info  # a requeued job has several rows; the last one is current
        return infos

    # -- cancel ---------------------------------------------------------------------------------
    def cancel(self, job_ids: list[str]) -> None:
        if job_ids:
            self.client.run(["scancel", *job_ids])
