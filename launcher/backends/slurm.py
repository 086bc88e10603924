"""Slurm: sbatch with dependencies, one batched squeue (+ sacct) per status refresh, scancel.

The client commands are found on PATH and read SLURM_CONF from the environment like any user's.
Status costs at most three client calls per refresh whatever the number of stages and runs:
squeue for everything slurmctld still holds, then sacct (or the job completion log through
`sacct -c`) only for jobs squeue no longer knows. The parsers are pure functions over the
commands' text, unit-tested on output recorded from the testbed (tests/slurm_output/).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import subprocess
from typing import Iterable, Optional, Sequence

from ..config.executors import EXECUTORS
from ..core.errors import SlurmError, SubmitFailed
from ..rendering.scripts import render_slurm_script
from .base import Check, JobInfo, JobRef, QueryResult, RunHandle
from .slurm_preflight import check_cluster_offers, slurm_checks

CALL_TIMEOUT_S = 60
SQUEUE_FORMAT = "%i|%T|%r|%M|%l|%D|%N|%S"
SACCT_FIELDS = "JobIDRaw,State,ExitCode,ElapsedRaw,Timelimit,NNodes,NodeList,Reason,Start,End"
JOBCOMP_FIELDS = "JobIDRaw,State,ExitCode,ElapsedRaw,Timelimit,NNodes,NodeList,Start,End"
UNREACHABLE = ("Unable to contact slurm controller", "Connection refused", "Socket timed out",
               "Zero Bytes were transmitted", "Communication connection failure", "Could not establish")
NO_VALUE = {"", "None", "(null)", "None assigned", "Unknown", "N/A"}


class SlurmClient:
    """Runs Slurm client commands; counts calls so benchmarks can check status stays batched."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        self.calls.append(argv)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=CALL_TIMEOUT_S,
                                  stdin=subprocess.DEVNULL, errors="replace")
        except FileNotFoundError:
            raise SlurmError(argv, 127, f"{argv[0]}: command not found (is this a Slurm login node?)") from None
        except subprocess.TimeoutExpired:
            raise SlurmError(argv, 124, f"no answer within {CALL_TIMEOUT_S} s") from None
        if check and proc.returncode != 0:
            raise SlurmError(argv, proc.returncode, proc.stderr or proc.stdout)
        return proc


# ------------------------------------------------------------------------------------- parsers
def parse_duration(text: str) -> Optional[float]:
    """Slurm's [D-]HH:MM:SS / MM:SS (or plain seconds) to seconds; None for UNLIMITED and the like."""
    text = text.strip()
    if text.isdigit():
        return float(text)
    match = re.match(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$", text)
    if not match:
        return None
    days, hours, minutes, seconds = (int(x) if x else 0 for x in match.groups())
    return float(days * 86400 + hours * 3600 + minutes * 60 + seconds)


def parse_timestamp(text: str) -> Optional[float]:
    """Slurm's local ISO time (2026-12-01T21:30:05) to Unix time; None for Unknown/None."""
    text = text.strip()
    if text in NO_VALUE:
        return None
    try:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timestamp()
    except ValueError:
        return None


def parse_exit_code(text: str) -> tuple[Optional[int], Optional[int]]:
    """sacct's `CODE:SIGNAL` to (code, signal); a signal of 0 is no signal."""
    code, _, signal = text.strip().partition(":")
    exit_code = int(code) if code.isdigit() else None
    sig = int(signal) if signal.isdigit() and int(signal) > 0 else None
    return exit_code, sig


def _value(text: str) -> Optional[str]:
    text = text.strip()
    return None if text in NO_VALUE else text


def _state(text: str) -> str:
    """`CANCELLED by 1000` / `CANCELLED+` → CANCELLED."""
    return (text.split() or ["UNKNOWN"])[0].rstrip("+").upper()


def parse_squeue(stdout: str) -> dict[str, JobInfo]:
    """Lines of `squeue --format=SQUEUE_FORMAT`."""
    infos = {}
    for line in stdout.splitlines():
        parts = line.split("|")
        if len(parts) != 8:
            continue
        job_id, state, reason, elapsed, limit, count, nodelist, start = (p.strip() for p in parts)
        if not job_id.isdigit():
            continue
        infos[job_id] = JobInfo(job_id=job_id, state=_state(state), reason=_value(reason),
                                elapsed_s=parse_duration(elapsed), time_limit=_value(limit),
                                nodes=_value(nodelist) or _value(count), start_time=parse_timestamp(start),
                                source="squeue")
    return infos


def parse_sacct(stdout: str, wanted: Iterable[str], source: str, fields: str = SACCT_FIELDS) -> dict[str, JobInfo]:
    """Lines of `sacct --parsable2 --format=FIELDS`; a requeued job has several rows, the last is current."""
    names = fields.split(",")
    wanted = set(wanted)
    infos: dict[str, JobInfo] = {}
    for line in stdout.splitlines():
        parts = line.split("|")
        if len(parts) < len(names):
            continue
        row = dict(zip(names, (p.strip() for p in parts)))
        job_id = row["JobIDRaw"]
        if job_id not in wanted:
            continue
        code, signal = parse_exit_code(row.get("ExitCode", ""))
        restarts = row.get("Restarts", "")
        infos[job_id] = JobInfo(
            job_id=job_id, state=_state(row["State"]), reason=_value(row.get("Reason", "")),
            elapsed_s=parse_duration(row.get("ElapsedRaw", "")), time_limit=_value(row.get("Timelimit", "")),
            nodes=_value(row.get("NodeList", "")), exit_code=code, signal=signal,
            restarts=int(restarts) if restarts.isdigit() else 0, start_time=parse_timestamp(row.get("Start", "")),
            end_time=parse_timestamp(row.get("End", "")), source=source)
    return infos


def merge_accounting(held: dict[str, JobInfo], accounted: dict[str, JobInfo], notes: list[str]) -> dict[str, JobInfo]:
    """squeue's answer, completed by accounting's (sacct or the completion log) for the jobs squeue no longer
    shows live.

    slurmctld is current for every job it holds, ended ones included (for MinJobAge after their end), and
    forgets a job only after it ended. Accounting lags behind it: slurmdbd records starts and ends
    asynchronously, minutes late when it is slow or down. So an accounting row counts only when it records
    the end of the job's latest attempt. A row still live (PENDING, RUNNING, REQUEUED: the end is not
    recorded yet) or one of an attempt that started before the one slurmctld holds (a requeued job's earlier
    NODE_FAIL) is ignored: the job is then judged by squeue while slurmctld holds it, else by its markers.
    Both start times are slurmctld's own, so clock skew plays no part in that comparison."""
    jobs = dict(held)
    lagging = []
    for job_id, info in accounted.items():
        current = held.get(job_id)
        earlier = (current is not None and current.start_time is not None and info.start_time is not None
                   and info.start_time < current.start_time)
        if info.live or earlier:
            lagging.append(job_id)
            continue
        # accounting has exit codes and signals; slurmctld, while it still holds the job, the real reason
        reason = current.reason if current is not None and current.reason else info.reason
        jobs[job_id] = dataclasses.replace(info, reason=reason)
    if lagging:
        notes.append(f"accounting has not recorded the end of job(s) {', '.join(lagging)} yet: judged by squeue, "
                     f"else by their markers")
    return jobs


def unreachable(text: str) -> bool:
    return any(marker in text for marker in UNREACHABLE)


# ------------------------------------------------------------------------------------- executor
class SlurmExecutor:
    traits = EXECUTORS["slurm"]

    def __init__(self, client: SlurmClient | None = None):
        self.client = client or SlurmClient()

    def render_script(self, run_id, run_dir, profile, stage, stages) -> str:
        return render_slurm_script(run_id, run_dir, profile, stage, stages)

    def preflight(self, profile, plan_stages) -> None:
        check_cluster_offers(self.client, profile, plan_stages)

    def checks(self, profile) -> list[Check]:
        return slurm_checks(self.client, profile)

    # -- submit ---------------------------------------------------------------------------------
    def submit(self, run: RunHandle, stages: Sequence[str], waiting_on: dict[str, str]) -> dict[str, str]:
        """sbatch each stage in dependency order, all or nothing: on any failure every job this call
        queued is cancelled before SubmitFailed is raised. A parent is waited for when it is in this
        submission or still live (`waiting_on`); parents that are done need no edge."""
        deps = run.plan.dependencies()
        dependency_type = run.profile.dependency_type
        submitted: dict[str, str] = {}
        for stage in stages:
            parents = [submitted.get(p) or waiting_on[p] for p in deps[stage] if p in submitted or p in waiting_on]
            argv = ["sbatch", "--parsable", "--kill-on-invalid-dep=yes"]
            if parents:
                argv.append(f"--dependency={dependency_type}:{':'.join(parents)}")
            argv.append(run.layout.script(stage))
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
    def query(self, jobs: Sequence[JobRef]) -> QueryResult:
        ids = sorted({ref.job_id for ref in jobs if ref.job_id.isdigit()}, key=int)
        result = QueryResult()
        if not ids:
            return result
        held = self._squeue(ids)
        finished = [j for j in ids if j not in held or not held[j].live]
        accounted = self._sacct(finished, result.notes) if finished else {}
        result.jobs = merge_accounting(held, accounted, result.notes)
        return result

    def _squeue(self, ids: list[str]) -> dict[str, JobInfo]:
        argv = ["squeue", "--noheader", "--states=all", f"--jobs={','.join(ids)}", f"--format={SQUEUE_FORMAT}"]
        proc = self.client.run(argv, check=False)
        if proc.returncode != 0:
            if "Invalid job id" in proc.stderr and not unreachable(proc.stderr):
                return {}  # every job has been purged from slurmctld's memory
            raise SlurmError(argv, proc.returncode, proc.stderr)
        return parse_squeue(proc.stdout)

    def _sacct(self, ids: list[str], notes: list[str]) -> dict[str, JobInfo]:
        base = ["sacct", "--noheader", "--parsable2", "--allocations", f"--jobs={','.join(ids)}"]
        proc = self.client.run([*base, f"--format={SACCT_FIELDS}"], check=False)
        text = (proc.stderr + proc.stdout).lower()
        if proc.returncode == 0:
            return parse_sacct(proc.stdout, ids, "sacct")
        if "accounting storage is disabled" in text or "not running a supported accounting" in text:
            proc = self.client.run(["sacct", "--completion", *base[1:], f"--format={JOBCOMP_FIELDS}"], check=False)
            if proc.returncode == 0:
                return parse_sacct(proc.stdout, ids, "jobcomp", JOBCOMP_FIELDS)
            notes.append("Slurm accounting is disabled and no job completion log is readable: finished "
                         "jobs are judged by their markers")
            return {}
        notes.append(f"sacct did not answer: {proc.stderr.strip()}" if unreachable(proc.stderr)
                     else f"sacct failed: {proc.stderr.strip()}")
        return {}

    # -- cancel ---------------------------------------------------------------------------------
    def cancel(self, jobs: Sequence[JobRef]) -> None:
        ids = [ref.job_id for ref in jobs]
        if ids:
            self.client.run(["scancel", *ids])
