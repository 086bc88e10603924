"""The Python API: what `minitron plan|submit|status|cancel|resume|runs|logs` do, as functions that
return data instead of printing.

The CLI's commands are these functions plus printing (launcher/app/commands.py), so a notebook and
the terminal get the same checks, the same results and the same errors: every error is a
`LauncherError` subclass carrying the `exit_code` the CLI exits with (launcher/core/errors.py), and
its `str()` is the CLI's one line. Nothing here prints, and importing it loads no torch or NeMo.
docs/api.md has an example.

A `run` argument is a run id, a unique prefix of one, or a run directory, as on the command line.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterator, NamedTuple, Optional, Sequence, TypedDict

from jobs.contract import read_markers

from .config.profile import ClusterProfile
from .core.errors import RecordNotSaved, SlurmError, SubmitFailed, UserError, did_you_mean
from .core.files import LineReader, open_log, tail_offset
from .planning.plan import Plan
from .planning.planner import make_plan
from .runs.prepare import load_inputs, preflight, prepare_run
from .runs.registry import Run, discard_new_run, index_run, indexed_runs, resolve_run
from .runs.smoke import smoke_inputs
from .runs.state import LIVE_RUN_STATES
from .runs.status import RunReport, query_runs, report_for, run_report, settled_state
from .runs.submission import cancel_run, resume_run, submit_run

__all__ = ["Plan", "RunReport", "Submission", "RunRow", "LogLine", "plan", "planned", "submit", "status",
           "cancel", "resume", "runs", "logs"]

FOLLOW_POLL_S = 1.0


@dataclass(frozen=True)
class Submission:
    """A run as `submit` or `resume` left it."""

    run_id: str
    run_dir: str
    dry_run: bool
    rendered_for: Optional[str]          # a dry run written away from job_dir: the job_dir its scripts name
    jobs: dict[str, Optional[str]]       # every stage's current job id (None: never submitted)
    scripts: dict[str, str]              # every stage's script
    queued: dict[str, str]               # what this call queued: stage -> job id ({} for a dry run)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RunRow(TypedDict, total=False):
    """One run of `runs()`; `state` is None where the run cannot be read (`error` says why)."""

    run_id: str
    dir: str
    executor: Optional[str]
    state: Optional[str]
    created_at: Optional[float]
    stages: Optional[int]
    error: Optional[str]
    stage_states: dict[str, str]         # only where the run's state was decided


class LogLine(NamedTuple):
    """A log line as the job wrote it, without its newline. A line over LOG_LINE_BYTES keeps only its
    end: `dropped` counts the bytes cut from its start."""

    data: bytes
    dropped: int = 0

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def planned(profile: Optional[str] = None, recipe: Optional[str] = None, overrides: Sequence[str] = (),
            nodes: Optional[int] = None) -> tuple[Plan, ClusterProfile]:
    """The plan and the profile it was made for (the profile names the GPU model; the plan does not)."""
    inputs = load_inputs(profile, recipe, list(overrides), nodes)
    return make_plan(inputs.profile, inputs.recipe), inputs.profile


def plan(profile: Optional[str] = None, recipe: Optional[str] = None, overrides: Sequence[str] = (),
         nodes: Optional[int] = None) -> Plan:
    """Plan every stage of `recipe` on `profile` (files or bundled names; None: the CLI's defaults) with
    `overrides` (`KEY=VALUE`, as `--set`); `nodes` caps every stage (as `--nodes`). Reads files only:
    nothing is created or queued."""
    return planned(profile, recipe, overrides, nodes)[0]


def submit(profile: Optional[str] = None, recipe: Optional[str] = None, overrides: Sequence[str] = (),
           dry_run: bool = False, smoke: bool = False, nodes: Optional[int] = None) -> Submission:
    """Render the run directory and submit its stage graph (`dry_run`: render only). `smoke`: the bundled
    tiny recipe on `profile`, every stage on one node (`recipe` must then be None). A failed submission
    raises SubmitFailed once what it had queued is cancelled, the run recorded as SUBMIT_FAILED
    (`exc.run_dir`); RecordNotSaved (a SubmitFailed) when the record could not be written: the run
    directory is then removed."""
    if smoke:
        if recipe:
            raise UserError("--smoke runs the bundled tiny recipe: leave out --recipe (use --set to change it)",
                            key="--recipe")
        recipe, overrides = smoke_inputs(list(overrides))
    inputs = load_inputs(profile, recipe, list(overrides), nodes)
    the_plan = make_plan(inputs.profile, inputs.recipe)
    if not dry_run:
        preflight(inputs, the_plan)
    run = prepare_run(inputs, the_plan, dry_run=dry_run)
    index_run(run)
    queued: dict[str, str] = {}
    if not dry_run:
        try:
            queued = submit_run(run)
        except RecordNotSaved:
            discard_new_run(run)
            raise
        except SubmitFailed as exc:
            exc.run_dir = run.dir
            raise
    return _submission(run, dry_run, queued)


def status(run: Optional[str] = None) -> RunReport:
    """Where the run is (None: the newest): each stage's state, job, progress, losses, exit and estimate.
    Only reads; asks the scheduler once for the jobs the markers cannot settle."""
    return report_for(resolve_run(run, default_newest=True))


def cancel(run: str, stage: Optional[str] = None) -> list[str]:
    """Cancel `stage` and everything downstream of it, or the whole run; returns the job ids cancelled."""
    return cancel_run(resolve_run(run), stage)


def resume(run: str, submit: bool = False) -> Submission:
    """Resubmit the stages that failed, were cancelled or never ran, and what depends on them; `queued`
    is empty when there was nothing to resume. A dry run is submitted only with `submit=True`."""
    found = resolve_run(run)
    queued, _ = resume_run(found, submit_dry_run=submit)
    return _submission(found, False, queued)


def runs() -> list[RunRow]:
    """Every registered run with its live state, newest first: markers first, then one batched query per
    backend for all runs. A backend that does not answer leaves its unfinished runs UNKNOWN (with the
    error); an unreadable run is listed with why."""
    entries = indexed_runs()
    readable = [(e.run, e.record) for e in entries if e.run is not None]
    results, unreachable = {}, {}
    for kind in {record.executor for _, record in readable}:
        try:
            results.update(query_runs([(r, rec) for r, rec in readable if rec.executor == kind]))
        except SlurmError as exc:  # the other backends' runs, and this one's finished ones, are still listed
            unreachable[kind] = str(exc)
    rows = []
    for entry in entries:
        row = RunRow(run_id=entry.run_id, dir=entry.dir, executor=entry.record.executor if entry.record else None,
                     state=None, created_at=entry.created_at or None,
                     stages=len(entry.record.stages) if entry.record else None, error=entry.error)
        if entry.run is not None and entry.record.executor in unreachable:
            row["state"] = settled_state(entry.run, entry.record) or "UNKNOWN"
            if row["state"] == "UNKNOWN":
                row["error"] = unreachable[entry.record.executor]
        elif entry.run is not None:
            try:
                report = run_report(entry.run, entry.record, results[entry.record.executor])
                row["state"] = report.overall
                row["stage_states"] = {s.name: s.state for s in report.stages}
            except UserError as exc:
                row["error"] = exc.message
        rows.append(row)
    return rows


def logs(run: str, stage: Optional[str] = None, lines: int = 50, follow: bool = False,
         rank: Optional[int] = None) -> Iterator[LogLine]:
    """The last `lines` lines of a stage's log (all of it when <= 0; `stage` None: the last stage that
    started), then with `follow` each new line once complete, until the run is no longer live. Streams
    in bounded memory whatever the log holds. `rank`: that rank's own output instead of every rank's
    (a stage of one rank has only the stage log). The lines are the job's bytes, unescaped: escape them
    before a terminal shows them (the CLI does). The run, stage and rank are checked at the call; the
    log is opened at the first line asked for."""
    found = resolve_run(run)
    record = found.load_record()
    if stage is None:
        started = [(read_markers(found.layout, n).started, n) for n in record.stages]
        started = [(s.time, n) for s, n in started if s is not None]
        if not started:
            raise UserError(f"no stage of run {found.id} has started yet", key="STAGE")
        stage = max(started)[1]
    if stage not in record.stages:
        raise UserError(f"run {found.id} has no stage {stage!r}", key="STAGE", hint=did_you_mean(stage, record.stages))
    job_id = record.stages[stage].job_id
    path = found.layout.stage_log(stage, job_id) if rank is None else _rank_log(found, stage, job_id, rank)
    if path is None:
        raise UserError(f"stage {stage} has no log yet", key="STAGE")
    return _stream(found, stage, path, lines, follow)


def _rank_log(run: Run, stage: str, job_id: Optional[str], rank: int) -> Optional[str]:
    """The log of one rank: its own file (the Slurm job's, else the local executor's), or the stage log
    where the stage has one rank."""
    planned = run.plan.stage(stage)
    ranks = planned.nodes * (planned.gpus_per_node or 1)
    if not 0 <= rank < ranks:
        raise UserError(f"stage {stage} has {'rank 0 only' if ranks == 1 else f'ranks 0 to {ranks - 1}'}, "
                        f"not {rank}", key="--rank")
    if ranks == 1:
        return run.layout.stage_log(stage, job_id)
    paths = [run.layout.rank_log(stage, job_id, rank)] if job_id else []
    found = [p for p in paths + [run.layout.rank_log(stage, None, rank)] if os.path.isfile(p)]
    if not found and run.layout.stage_log(stage, job_id):
        raise UserError(f"rank {rank} of stage {stage} has no log of its own yet (`minitron logs` without --rank "
                        f"shows every rank's)", key="--rank")
    return found[0] if found else None


def _stream(run: Run, stage: str, path: str, lines: int, follow: bool) -> Iterator[LogLine]:
    try:
        fd = open_log(path)
    except OSError as exc:
        raise UserError(f"cannot read the log of stage {stage}: {exc.strerror or exc}", key="STAGE") from None
    try:
        reader = LineReader(fd, tail_offset(fd, lines) if lines > 0 else 0)
        yield from (LogLine(*line) for line in reader.lines())
        while follow:
            live = report_for(run).state in LIVE_RUN_STATES  # before reading: what the run wrote is read
            yield from (LogLine(*line) for line in reader.lines())
            if not live:
                break
            time.sleep(FOLLOW_POLL_S)
        last = reader.unfinished()
        if last:
            yield LogLine(*last)
    finally:
        os.close(fd)


def _submission(run: Run, dry_run: bool, queued: dict[str, str]) -> Submission:
    record = run.load_record()
    return Submission(run_id=run.id, run_dir=run.dir, dry_run=dry_run, rendered_for=record.rendered_for,
                      jobs={name: s.job_id for name, s in record.stages.items()},
                      scripts={name: run.layout.script(name) for name in record.stages}, queued=dict(queued))
